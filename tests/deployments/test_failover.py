"""The failover chain: order, retryable errors, timeouts, cool-down, and client errors passed through.

The chain's last backend is the real llama.cpp model, so a failover really ends in a generation.
"""

from __future__ import annotations

from typing import Any

import pytest

from deployments.failover import BackendChain
from deployments.llm import LlamaCppBackend
from deployments.types import (
    JSON_OBJECT,
    JSON_SCHEMA,
    TOOLS,
    ChatMessage,
    InvalidInput,
    LLMRequest,
    ModelUnavailable,
    ResponseFormat,
    ToolSpec,
)
from tests.helpers import ScriptedBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def llama() -> LlamaCppBackend:
    backend = LlamaCppBackend(n_threads=1)
    backend.load()
    return backend


REQUEST = LLMRequest(messages=[ChatMessage("user", "Say hi.")], max_tokens=8, temperature=0)


def chain(*backends: Any, **options: Any) -> BackendChain:
    made = BackendChain(list(backends), **options)
    made.load()
    return made


async def test_first_backend_answers() -> None:
    first, second = ScriptedBackend("a"), ScriptedBackend("b")
    assert (await chain(first, second).run(REQUEST)).text == "a"
    assert second.calls == 0


async def test_failing_backend_fails_over_to_the_real_model(llama: LlamaCppBackend) -> None:
    failing = ScriptedBackend("cloud", "fail")
    result = await chain(failing, llama).run(REQUEST)
    assert failing.calls == 1
    assert result.model == "SmolLM2-135M-Instruct" and result.completion_tokens > 0


@pytest.mark.parametrize("behaviour", ["crash", "hang"])
async def test_crash_and_timeout_fail_over(behaviour: str) -> None:
    made = chain(ScriptedBackend("bad", behaviour), ScriptedBackend("good"), timeout_s=0.2)
    assert (await made.run(REQUEST)).text == "good"
    assert made.health()[0]["failures"] == 1


async def test_client_error_is_not_failed_over() -> None:
    second = ScriptedBackend("b")
    with pytest.raises(InvalidInput):
        await chain(ScriptedBackend("a", "refuse"), second).run(REQUEST)
    assert second.calls == 0


async def test_backend_that_cannot_load_is_skipped_and_reported() -> None:
    made = chain(ScriptedBackend("a", loads=False), ScriptedBackend("b"))
    assert (await made.run(REQUEST)).text == "b"
    health = made.health()
    assert health[0]["status"] == "unavailable" and "no weights" in health[0]["reason"]


async def test_repeated_failures_cool_down_then_retry() -> None:
    clock = Clock()
    failing, good = ScriptedBackend("a", "fail"), ScriptedBackend("b")
    made = chain(failing, good, failure_threshold=2, cooldown_s=30, clock=clock)
    for _ in range(2):
        assert (await made.run(REQUEST)).text == "b"
    assert made.health()[0]["status"] == "cooling_down"
    await made.run(REQUEST)
    assert failing.calls == 2  # skipped while cooling down
    clock.now += 31
    failing.behaviour = "answer"
    assert (await made.run(REQUEST)).text == "a"
    assert made.health()[0]["status"] == "ready"


async def test_all_failing_is_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable) as caught:
        await chain(ScriptedBackend("a", "fail"), ScriptedBackend("b", "fail")).run(REQUEST)
    assert "a:" in caught.value.message and "b:" in caught.value.message


async def test_stream_fails_over_before_the_first_chunk(llama: LlamaCppBackend) -> None:
    chunks = [c async for c in chain(ScriptedBackend("cloud", "fail"), llama).stream(REQUEST)]
    assert chunks[-1].finish_reason is not None and chunks[-1].completion_tokens


async def test_broken_when_every_loaded_backend_cools_down() -> None:
    clock = Clock()
    made = chain(ScriptedBackend("a", "crash"), ScriptedBackend("b", loads=False), failure_threshold=1, clock=clock)
    assert not made.broken()
    with pytest.raises(ModelUnavailable):
        await made.run(REQUEST)
    assert made.broken()  # "b" never loaded and does not count; "a" cools down
    clock.now += 31
    assert not made.broken()


def test_backends_that_never_loaded_are_not_broken() -> None:
    assert not chain(ScriptedBackend("a", loads=False)).broken()


async def test_arrange_reorders_and_a_disabled_backend_is_skipped_at_once() -> None:
    first, second, third = ScriptedBackend("a"), ScriptedBackend("b"), ScriptedBackend("c")
    made = chain(first, second, third)
    made.arrange(["c", "a"], disabled=[])
    assert [entry["backend"] for entry in made.health()] == ["c", "a", "b"]  # b keeps its place after them
    assert (await made.run(REQUEST)).text == "c"
    made.arrange(["c", "a"], disabled=["c"])
    assert (await made.run(REQUEST)).text == "a"
    assert third.calls == 1  # the disabled backend was not called
    entry = made.health()[0]
    assert (entry["status"], entry["disabled"], entry["reason"]) == ("ready", True, "disabled by an admin")
    assert [(info.name, info.ready) for info in made.infos()] == [("c", False), ("a", True), ("b", True)]


async def test_arrange_ignores_names_the_chain_lacks_and_can_be_undone() -> None:
    made = chain(ScriptedBackend("a"), ScriptedBackend("b"))
    made.arrange(["gone", "b"], disabled=["gone"])
    assert [entry["backend"] for entry in made.health()] == ["b", "a"]
    made.arrange([], disabled=[])  # the configured order again
    assert [entry["backend"] for entry in made.health()] == ["a", "b"]
    assert (await made.run(REQUEST)).text == "a"


async def test_every_backend_disabled_is_model_unavailable_and_not_ready() -> None:
    made = chain(ScriptedBackend("a"))
    made.arrange([], disabled=["a"])
    assert not made.ready()
    with pytest.raises(ModelUnavailable) as caught:
        await made.run(REQUEST)
    assert "disabled by an admin" in caught.value.message


class CapableBackend(ScriptedBackend):
    """A scripted backend that declares capabilities."""

    def __init__(self, name: str, capabilities: frozenset[str], behaviour: str = "answer") -> None:
        super().__init__(name, behaviour)
        self.capabilities = capabilities


TOOL_REQUEST = LLMRequest(
    messages=[ChatMessage("user", "Weather?")], tools=[ToolSpec("weather")], tool_choice="required"
)


async def test_a_backend_without_a_needed_capability_is_skipped() -> None:
    plain, tooled = ScriptedBackend("plain"), CapableBackend("tooled", frozenset({TOOLS}))
    made = chain(plain, tooled)
    assert (await made.run(TOOL_REQUEST)).text == "tooled"
    assert plain.calls == 0
    assert (await made.run(REQUEST)).text == "plain"  # a request that needs nothing keeps the order
    assert made.infos()[1].capabilities == [TOOLS]


async def test_failover_stays_among_the_capable_backends() -> None:
    failing = CapableBackend("a", frozenset({TOOLS}), "fail")
    plain, good = ScriptedBackend("plain"), CapableBackend("b", frozenset({TOOLS, JSON_SCHEMA}))
    assert (await chain(failing, plain, good).run(TOOL_REQUEST)).text == "b"
    assert failing.calls == 1 and plain.calls == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (LLMRequest(prompt="hi", logprobs=True), "logprobs"),
        (TOOL_REQUEST, "tools"),
        (LLMRequest(prompt="hi", response_format=ResponseFormat("json_schema", {"type": "object"})), "response_format"),
        (
            LLMRequest(messages=[ChatMessage("user", "hi"), ChatMessage("user", "this?", images=[b"png"])]),
            "messages.1.content",
        ),
    ],
)
async def test_no_capable_backend_is_a_400_naming_the_field(request_: LLMRequest, field: str) -> None:
    backend = ScriptedBackend("plain")
    with pytest.raises(InvalidInput) as caught:
        await chain(backend, CapableBackend("json", frozenset({JSON_OBJECT}))).run(request_)
    assert caught.value.status == 400 and caught.value.details[0]["field"] == field
    assert backend.calls == 0


async def test_logprobs_on_the_real_model_is_refused_naming_the_field(llama: LlamaCppBackend) -> None:
    with pytest.raises(InvalidInput) as caught:
        async for _ in chain(llama).stream(LLMRequest(prompt="hi", logprobs=True)):
            pass
    assert caught.value.details == [
        {"field": "logprobs", "reason": "no available backend (llama_cpp) supports logprobs"}
    ]


async def test_a_capable_backend_that_did_not_load_is_not_a_client_error() -> None:
    made = chain(ScriptedBackend("plain", loads=False))
    with pytest.raises(ModelUnavailable):  # nothing usable at all: unavailable, not the client's fault
        await made.run(TOOL_REQUEST)
