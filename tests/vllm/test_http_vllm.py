"""`/v1/chat/completions` and `/v1/completions` on the vLLM backend, through real HTTP and the `openai` client.

The same checks as on llama.cpp (tests/serve_app/test_http_openai.py), plus what only a second
engine can show: that streaming and not streaming give the same text and counts, and that the
prompt is counted as the model's own tokenizer counts it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.conftest import make_token
from tests.serve_app.contract import assert_error
from tests.vllm.conftest import MAX_MODEL_LEN, MODEL_DIR, SERVED_NAME

pytestmark = pytest.mark.ray

COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]


@pytest.fixture(scope="module")
def client(vllm_platform_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vllm_platform_url}/v1", api_key=make_token(), timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def http(vllm_platform_url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {make_token()}"}
    with httpx.Client(base_url=vllm_platform_url, headers=headers, timeout=120) as session:
        yield session


def test_vllm_serves_llm(http: httpx.Client) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert models["llm"]["backend"] == "vllm" and models["llm"]["model"] == SERVED_NAME


def test_chat_completion(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llm", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16
    )
    assert answer.choices[0].message.content.strip()
    assert answer.model == SERVED_NAME
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 16
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_stream_has_several_chunks_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llm",
        messages=[{"role": "user", "content": "Write a sentence about the sea."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 3
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 24
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_stream_and_whole_answer_agree(client: openai.OpenAI) -> None:
    """At temperature 0 the streamed pieces join into the same text, with the same counts."""
    whole = client.chat.completions.create(model="llm", messages=COUNT, max_tokens=40, temperature=0)
    stream = client.chat.completions.create(
        model="llm", messages=COUNT, max_tokens=40, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_usage_counts_the_models_tokens(client: openai.OpenAI) -> None:
    """The prompt is counted as the model's chat template and tokenizer make it; output stops at max_tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    messages = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    answer = client.chat.completions.create(model="llm", messages=messages, max_tokens=7, temperature=0)
    assert answer.usage.prompt_tokens == len(prompt_ids)
    assert answer.usage.completion_tokens == 7 and answer.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence(client: openai.OpenAI, stream: bool) -> None:
    answer = client.chat.completions.create(
        model="llm", messages=COUNT, max_tokens=40, temperature=0, stop=["5"], stream=stream
    )
    if stream:
        chunks = list(answer)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        text, finish = answer.choices[0].message.content, [answer.choices[0].finish_reason]
    assert "4" in text and "5" not in text and "6" not in text, text
    assert finish == ["stop"]


def test_plain_completion_by_model_name(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=SERVED_NAME, prompt="The sky is", max_tokens=5, temperature=0)
    assert answer.choices[0].text and answer.usage.completion_tokens <= 5 and answer.usage.prompt_tokens == 3


def test_concurrent_requests_are_batched_and_all_answered(client: openai.OpenAI) -> None:
    def ask(i: int) -> int:
        answer = client.chat.completions.create(
            model="llm", messages=[{"role": "user", "content": f"Give me fact number {i} about owls."}], max_tokens=16
        )
        return answer.usage.completion_tokens

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(ask, range(4)))
    assert all(0 < n <= 16 for n in counts)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # Fits the platform's max_tokens limit but not, with the prompt, the model's context.
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_MODEL_LEN + 1}, "input_too_large"),
        ({"messages": [{"role": "user", "content": "word " * MAX_MODEL_LEN}], "max_tokens": 16}, "input_too_large"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "validation_error"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "validation_error"),
        ({"messages": []}, "validation_error"),
    ],
)
def test_bad_request_is_422(http: httpx.Client, body: dict, code: str) -> None:  # type: ignore[type-arg]
    assert_error(http.post("/v1/chat/completions", json={"model": "llm", **body}), 422, code)


def test_bad_request_in_a_stream_is_422_before_any_byte(http: httpx.Client) -> None:
    body = {
        "model": "llm",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": MAX_MODEL_LEN + 1,
        "stream": True,
    }
    assert_error(http.post("/v1/chat/completions", json=body), 422, "input_too_large")
