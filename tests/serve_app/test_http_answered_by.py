"""Every answer names the model that produced it: after a failover, the backend that answered, not
the first one listed (a tenant must be able to see where its data went)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import make_token
from tests.fakes.gemini_server import FakeGemini

pytestmark = pytest.mark.ray

LOCAL = "SmolLM2-135M-Instruct"
MODEL_HEADER = "x-labubu-model"


@pytest.fixture()
def gemini_first(platform_url: str, session_gemini: FakeGemini) -> Iterator[httpx.Client]:
    """`llm` with the (fake) cloud first in its failover list; the configured order again after."""
    admin = {"Authorization": f"Bearer {make_token(tenant='answered-ops', role='admin')}"}
    with httpx.Client(base_url=platform_url, headers=admin, timeout=120) as http:
        session_gemini.reset()
        assert http.put("/v1/admin/models/llm", json={"backends": ["gemini"]}).status_code == 200
        try:
            yield http
        finally:
            session_gemini.reset()
            # One good answer from the cloud clears the failures a test made it count, so that later
            # tests find it `ready`; then the configured order again.
            chat = {"model": "llm", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2}
            assert http.post("/v1/chat/completions", json=chat).status_code == 200
            assert http.put("/v1/admin/models/llm", json={"backends": ["llama_cpp", "gemini"]}).status_code == 200


def test_the_answer_names_the_cloud_when_it_answered(gemini_first: httpx.Client, platform_url: str) -> None:
    client = openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant="answered"), max_retries=0)
    chat = client.chat.completions.with_raw_response.create(
        model="llm", messages=[{"role": "user", "content": "Say hi."}], max_tokens=3
    )
    answer = chat.parse()
    assert answer.model.startswith("gemini") and chat.headers[MODEL_HEADER] == answer.model


def test_after_a_failover_the_answer_names_the_backend_that_answered(
    gemini_first: httpx.Client, platform_url: str, session_gemini: FakeGemini
) -> None:
    session_gemini.fail_status = 503  # the cloud, first in the list, fails: the local model answers
    client = openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant="answered"), max_retries=0)
    messages = [{"role": "user", "content": "Say hi."}]
    chat = client.chat.completions.create(model="llm", messages=messages, max_tokens=3)  # type: ignore[arg-type]
    assert chat.model == LOCAL
    chunks = list(
        client.chat.completions.create(
            model="llm",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {chunk.model for chunk in chunks} == {LOCAL}
    # Two failures: below the chain's threshold, so the cloud does not cool down for later tests.
    assert len(session_gemini.requests) >= 2  # the cloud was really tried first, each time


def test_every_model_route_names_its_model(platform_url: str) -> None:
    client = openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant="answered"), max_retries=0)
    completion = client.completions.with_raw_response.create(model="llm", prompt="Once upon a time", max_tokens=3)
    assert completion.parse().model == completion.headers[MODEL_HEADER] == LOCAL
    embedding = client.embeddings.with_raw_response.create(model="embed", input="a fox")
    assert embedding.parse().model == embedding.headers[MODEL_HEADER] == "all-MiniLM-L6-v2"
    speech = client.audio.speech.with_raw_response.create(
        model="tts", voice="alloy", input="Hello there.", response_format="wav"
    )
    assert speech.headers[MODEL_HEADER]
    transcription = client.audio.transcriptions.with_raw_response.create(
        model="stt", file=("hello.wav", speech.content, "audio/wav")
    )
    assert transcription.headers[MODEL_HEADER] == transcription.http_response.json()["model"] != ""
    image = client.images.with_raw_response.generate(prompt="a red fox", size="64x64", response_format="b64_json")
    assert image.headers[MODEL_HEADER] == image.http_response.json()["model"] != ""
