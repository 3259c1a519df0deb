"""`echo_fixture`: an `llm` backend that answers at once. A benchmark fixture, never in a default config.

`benchmarks/ceiling.py` selects it (the `llm` service's backends in the app args) to measure what
the platform itself costs a call (HTTP, the ingress, the scheduler's admission, the replica) with
no model time in the way. It answers the last message's text back, cut to `max_tokens` words, and
counts words as tokens, so metering and charging run as they do for a real model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from deployments.types import STREAMING, LLMChunk, LLMRequest, LLMResult


def echoed(request: LLMRequest) -> tuple[str, int, int]:
    """The answer's text, the prompt's words and the answer's words."""
    texts = [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]
    prompt_words = sum(len(text.split()) for text in texts)
    words = (texts[-1] if texts else "").split()[: request.max_tokens]
    return " ".join(words), prompt_words, len(words)


class EchoLLMBackend:
    """Answers the last message back, word for word, without a model (see the module's docstring)."""

    name = "echo_fixture"
    capabilities = frozenset({STREAMING})

    def __init__(self, model: str = "echo-fixture") -> None:
        self.model = model

    def load(self) -> None:
        """Nothing to load."""

    async def run(self, request: LLMRequest) -> LLMResult:
        text, prompt_tokens, completion_tokens = echoed(request)
        finish = "length" if completion_tokens == request.max_tokens else "stop"
        return LLMResult(text, finish, prompt_tokens, completion_tokens, model=self.model)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        text, prompt_tokens, completion_tokens = echoed(request)
        for index, word in enumerate(text.split()):
            yield LLMChunk(text=word if index == 0 else f" {word}")
        finish = "length" if completion_tokens == request.max_tokens else "stop"
        yield LLMChunk(text="", finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
