"""The llama.cpp backend on the packaged SmolLM2 weights: real generations, usage and limits."""

from __future__ import annotations

import pytest

from deployments.llm import LlamaCppBackend, VllmBackend
from deployments.types import ChatMessage, InputTooLarge, InvalidInput, LLMRequest, ModelUnavailable


@pytest.fixture(scope="module")
def llama() -> LlamaCppBackend:
    backend = LlamaCppBackend(n_ctx=512, n_threads=1)
    backend.load()
    return backend


async def test_chat_generates_text_with_usage(llama: LlamaCppBackend) -> None:
    result = await llama.run(LLMRequest(messages=[ChatMessage("user", "What is 2+2?")], max_tokens=16))
    assert result.text.strip()
    assert result.prompt_tokens > 5 and 0 < result.completion_tokens <= 16


async def test_max_tokens_bounds_the_generation(llama: LlamaCppBackend) -> None:
    request = LLMRequest(prompt="Count: one, two, three,", max_tokens=4, temperature=0)
    result = await llama.run(request)
    assert result.finish_reason == "length" and result.completion_tokens == 4


async def test_stream_yields_several_chunks_then_usage(llama: LlamaCppBackend) -> None:
    request = LLMRequest(messages=[ChatMessage("user", "Tell me about the sea.")], max_tokens=20, temperature=0)
    chunks = [chunk async for chunk in llama.stream(request)]
    assert len([c for c in chunks if c.text]) >= 3
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].completion_tokens


async def test_stop_sequence_ends_the_text(llama: LlamaCppBackend) -> None:
    request = LLMRequest(prompt="1, 2, 3, 4, 5, 6,", max_tokens=20, temperature=0, stop=["9"])
    result = await llama.run(request)
    assert "9" not in result.text


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (LLMRequest(messages=[ChatMessage("user", "   ")]), InvalidInput),
        (LLMRequest(), InvalidInput),
        (LLMRequest(prompt="hi", max_tokens=0), InputTooLarge),
        (LLMRequest(prompt="hi", max_tokens=600), InputTooLarge),
    ],
)
async def test_bad_requests(llama: LlamaCppBackend, request_: LLMRequest, error: type[Exception]) -> None:
    with pytest.raises(error):
        await llama.run(request_)


def test_missing_weights_are_model_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelUnavailable):
        LlamaCppBackend(model_path=str(tmp_path / "missing.gguf")).load()


def test_vllm_without_vllm_installed_is_unavailable() -> None:
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ModelUnavailable, match="vLLM is not installed"):
            VllmBackend().load()
    else:
        pytest.skip("vLLM is installed here: the vLLM test tier covers it")
