"""The llama.cpp backend on the packaged SmolLM2 weights: real generations, usage and limits, and
the grammar-constrained tool calls and structured outputs (they validate even on a 135M model)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from deployments.background import lowest_os_priority
from deployments.llm import EngineTurns, KeptContexts, LlamaCppBackend, SavedContext, VllmBackend
from deployments.types import (
    LOGPROBS,
    TOOLS,
    ChatMessage,
    InputTooLarge,
    InvalidInput,
    LLMChunk,
    LLMRequest,
    ModelUnavailable,
    ResponseFormat,
    ToolCall,
    ToolSpec,
)
from tests.helpers import assert_lowest_priority, wait_until


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


async def test_completion_tokens_never_exceed_max_tokens_when_the_text_tokenizes_longer(llama: LlamaCppBackend) -> None:
    # SmolLM2 writes these emojis as byte tokens: its 4 tokens make text that tokenizes as 6.
    request = LLMRequest(messages=[ChatMessage("user", "Reply with emojis only.")], max_tokens=4, temperature=0)
    result = await llama.run(request)
    assert llama._count(result.text) > 4  # the case this test is about
    assert (result.finish_reason, result.completion_tokens) == ("length", 4)


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


# ---------------------------------------------------------------- tools and structured outputs

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "colour", "hobbies"],
    "additionalProperties": False,
}
BOOK = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "pages": {"type": "integer"},
        "fiction": {"type": "boolean"},
    },
    "required": ["title", "pages", "fiction"],
}
WEATHER = ToolSpec(
    "get_weather",
    "The current weather of a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
)
SEARCH = ToolSpec(
    "search",
    "Search the web",
    {"type": "object", "properties": {"query": {"type": "string", "maxLength": 40}}, "required": ["query"]},
)


def chat(text: str, **options: Any) -> LLMRequest:
    options = {"max_tokens": 120, "temperature": 0.0, **options}
    return LLMRequest(messages=[ChatMessage("user", text)], **options)


@pytest.mark.parametrize("schema", [PERSON, BOOK], ids=["person", "book"])
async def test_json_schema_output_validates(llama: LlamaCppBackend, schema: dict[str, Any]) -> None:
    result = await llama.run(chat("Describe one as JSON.", response_format=ResponseFormat("json_schema", schema)))
    assert result.finish_reason == "stop"
    jsonschema.validate(json.loads(result.text), schema)


async def test_json_object_output_is_an_object(llama: LlamaCppBackend) -> None:
    # The grammar allows any object, nested without end: a prompt that the 135M model answers in a
    # few keys ("A cat, as JSON." nests "looks" until max_tokens, greedy or not).
    question = "What is the capital of France? Answer as a JSON object."
    result = await llama.run(chat(question, response_format=ResponseFormat("json_object"), max_tokens=200))
    assert result.finish_reason == "stop"
    assert isinstance(json.loads(result.text), dict)


@pytest.mark.parametrize(("tool_choice", "called"), [("required", None), ("search", "search")])
async def test_a_tool_call_validates_against_its_schema(
    llama: LlamaCppBackend, tool_choice: str, called: str | None
) -> None:
    result = await llama.run(chat("What is the weather in Paris?", tools=[WEATHER, SEARCH], tool_choice=tool_choice))
    assert result.finish_reason == "tool_calls" and result.text == ""
    [call] = result.tool_calls
    assert call.id.startswith("call_")
    tool = {"get_weather": WEATHER, "search": SEARCH}[call.name]
    assert called in (None, call.name)
    jsonschema.validate(json.loads(call.arguments), tool.parameters)


async def test_auto_after_a_tool_result_answers_in_text(llama: LlamaCppBackend) -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris", "unit": "celsius"}')
    history = [
        ChatMessage("user", "What is the weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", "18 degrees and sunny", tool_call_id="call_1", name="get_weather"),
    ]
    result = await llama.run(LLMRequest(messages=history, tools=[WEATHER], max_tokens=40, temperature=0))
    assert result.finish_reason in ("stop", "length") and result.text.strip() and not result.tool_calls
    prompt, _ = llama._prompt(LLMRequest(messages=history, tools=[WEATHER]))
    assert "18 degrees and sunny" in prompt and '"city": "Paris"' in prompt


async def test_auto_either_calls_or_answers(llama: LlamaCppBackend) -> None:
    result = await llama.run(chat("What is the weather in Paris?", tools=[WEATHER]))
    if result.tool_calls:
        jsonschema.validate(json.loads(result.tool_calls[0].arguments), WEATHER.parameters)
    else:
        assert result.finish_reason == "stop" and result.text


async def test_a_streamed_tool_call_comes_whole_with_its_finish(llama: LlamaCppBackend) -> None:
    chunks = [c async for c in llama.stream(chat("Weather in Rome?", tools=[WEATHER], tool_choice="required"))]
    assert chunks[-1].finish_reason == "tool_calls"
    [call] = chunks[-1].tool_calls
    jsonschema.validate(json.loads(call.arguments), WEATHER.parameters)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            chat("x", response_format=ResponseFormat("json_schema", {"not": {"type": "string"}})),
            "response_format.json_schema.schema",
        ),
        (
            chat("x", tools=[ToolSpec("f", "", {"type": "object", "properties": {"a": {"if": {"type": "string"}}}})]),
            "tools.0.function.parameters",
        ),
        (chat("x", tools=[WEATHER], tool_choice="nope"), "tool_choice"),
    ],
)
async def test_what_the_grammar_cannot_enforce_is_refused_naming_the_field(
    llama: LlamaCppBackend, request_: LLMRequest, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await llama.run(request_)
    assert caught.value.details[0]["field"] == field


async def test_n_choices_are_n_generations(llama: LlamaCppBackend) -> None:
    result = await llama.run(chat("Name a fruit.", n=2, temperature=1.0, seed=11, max_tokens=8))
    choices = result.choices()
    assert len(choices) == 2 and all(c.text for c in choices)
    single = await llama.run(chat("Name a fruit.", temperature=1.0, seed=11, max_tokens=8))
    assert single.text == choices[0].text  # the seed is honoured: choice 0 is seed, choice 1 seed + 1
    assert result.completion_tokens > single.completion_tokens


async def test_the_seed_is_honoured(llama: LlamaCppBackend) -> None:
    answers = {(await llama.run(chat("Tell a story.", temperature=1.0, seed=5, max_tokens=12))).text for _ in range(2)}
    assert len(answers) == 1


def test_llama_cpp_declares_no_logprobs() -> None:
    assert LOGPROBS not in LlamaCppBackend.capabilities and TOOLS in LlamaCppBackend.capabilities


# ---------------------------------------------------------------- background calls yield the engine


def test_engine_turns_go_to_the_foreground_first_then_by_arrival() -> None:
    turns = EngineTurns()
    stop = threading.Event()
    order: list[str] = []
    holder = turns.ticket(background=False)
    tickets = {
        "background 1": turns.ticket(background=True),
        "foreground 1": turns.ticket(background=False),
        "background 2": turns.ticket(background=True),
        "foreground 2": turns.ticket(background=False),
    }

    def wait_turn(name: str) -> None:
        with turns.turn(tickets[name], stop) as running:
            assert running
            order.append(name)

    with turns.turn(holder, stop):
        threads = [threading.Thread(target=wait_turn, args=(name,)) for name in tickets]
        for thread in threads:
            thread.start()
        wait_until(lambda: turns.foreground_waiting == 2 and len(turns._waiting) == 4)
    for thread in threads:
        thread.join(5)
    assert order == ["foreground 1", "foreground 2", "background 1", "background 2"]
    assert turns.foreground_waiting == 0


def test_a_caller_that_goes_away_gives_its_place_up() -> None:
    turns = EngineTurns()
    stop, gone = threading.Event(), threading.Event()
    outcome: list[bool] = []

    def wait_turn() -> None:
        with turns.turn(turns.ticket(background=False), gone) as running:
            outcome.append(running)

    with turns.turn(turns.ticket(background=True), stop):
        thread = threading.Thread(target=wait_turn)
        thread.start()
        wait_until(lambda: turns.foreground_waiting == 1)
        gone.set()
        thread.join(5)
    assert outcome == [False] and turns.foreground_waiting == 0 and not turns._waiting
    # This thread held a background turn that a foreground call waited for: it keeps its own priority.
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19
    with turns.turn(turns.ticket(background=True), stop) as running:  # the engine is free again
        assert running


def test_a_background_turn_has_the_foreground_priority_while_a_foreground_call_waits_for_it() -> None:
    """No priority inversion: a SCHED_IDLE thread that holds the engine gets the waiting caller's
    priority until its turn ends (the test runs as root, as CI does; elsewhere it is best effort)."""
    turns = EngineTurns()
    stop = threading.Event()
    holding, release = threading.Event(), threading.Event()
    policies: dict[str, int] = {}

    def background_turn() -> None:
        lowest_os_priority()
        me = threading.get_native_id()
        with turns.turn(turns.ticket(background=True), stop):
            policies["holding"] = os.sched_getscheduler(me)
            holding.set()
            release.wait(5)
            policies["while a foreground call waits"] = os.sched_getscheduler(me)
        policies["after its turn"] = os.sched_getscheduler(me)

    def foreground_turn() -> None:
        with turns.turn(turns.ticket(background=False), stop):
            pass

    background = threading.Thread(target=background_turn)
    background.start()
    holding.wait(5)
    foreground = threading.Thread(target=foreground_turn)
    foreground.start()
    wait_until(lambda: turns.foreground_waiting == 1)
    release.set()
    for thread in (background, foreground):
        thread.join(5)
    assert policies == {
        "holding": os.SCHED_IDLE,
        "while a foreground call waits": os.SCHED_OTHER,
        "after its turn": os.SCHED_IDLE,
    }


def test_a_saved_context_resumes_a_generation_without_evaluating_its_prompt_again(llama: LlamaCppBackend) -> None:
    """What a yielding background generation keeps: put back after another prompt used the
    context, llama.cpp finds the whole prompt cached and goes on with the text it writes alone."""
    engine = llama._llama
    prompt = "Once upon a time, in a lighthouse by the sea,"
    alone = engine.create_completion(prompt, max_tokens=24, temperature=0)["choices"][0]["text"]
    engine.reset()
    first = engine.create_completion(prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
    saved = SavedContext.of(engine)
    engine.create_completion("What is 2+2? The answer is", max_tokens=4, temperature=0)
    assert list(engine.input_ids[: len(saved.tokens)]) != list(saved.tokens)
    saved.restore(engine)
    assert engine.n_tokens == len(saved.tokens)
    assert list(engine.input_ids[: engine.n_tokens]) == list(saved.tokens)
    rest = engine.create_completion(prompt + first, max_tokens=12, temperature=0)["choices"][0]["text"]
    assert first + rest == alone


async def test_a_background_generation_yields_to_a_chat_and_resumes(llama: LlamaCppBackend) -> None:
    """A long background completion gives the engine to a chat that arrives while it runs, at its
    next token, and then goes on to its full length with the text it would have written alone."""
    counting = LLMRequest(prompt="1, 2, 3, 4, 5, 6,", max_tokens=120, temperature=0)
    alone = await llama.run(counting)
    finished: list[str] = []

    async def background() -> tuple[str, LLMChunk]:
        texts: list[str] = []
        async for chunk in llama.stream(replace(counting, background=True)):
            texts.append(chunk.text)
            if len(texts) == 5:
                started.set()
        finished.append("background")
        return "".join(texts), chunk

    started = asyncio.Event()
    running = asyncio.create_task(background())
    await started.wait()
    answer = await llama.run(chat("What is 2+2?", max_tokens=4, temperature=0))
    finished.append("chat")
    text, last = await running
    assert finished == ["chat", "background"]  # the chat did not wait for the 120 tokens
    assert answer.text
    assert text == alone.text
    assert last.finish_reason == alone.finish_reason == "length"
    assert abs(last.completion_tokens - alone.completion_tokens) <= 1
    # It ran in a thread of the lowest CPU priority, which the chat's thread does not share.
    assert_lowest_priority(llama._background_threads)


def evaluated_tokens(engine: Any, calls: list[int]) -> Any:
    """llama.cpp's `eval`, recording how many tokens each call evaluates."""
    evaluate = engine.eval

    def recording(tokens: Any) -> None:
        calls.append(len(tokens))
        evaluate(tokens)

    return recording


async def test_a_chat_that_other_prompts_pushed_out_is_put_back_and_answers_the_same(
    llama: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt cache across calls: a voice turn's context, overwritten by a background line,
    is kept and put back for the next call that continues it, which evaluates only its new
    tokens and writes what it wrote the first time."""
    turn = LLMRequest(
        messages=[
            ChatMessage("system", "You are a helpful, friendly voice assistant. Answer briefly."),
            ChatMessage("user", "What color is the sky on a sunny day?"),
        ],
        max_tokens=8,
        temperature=0.0,
    )
    story = "Write a long story about a lighthouse keeper and a storm."
    batch_line = replace(chat(story, max_tokens=4), background=True)
    monkeypatch.setattr(llama, "_kept", KeptContexts(2**24))  # not the contexts earlier tests left
    first = await llama.run(turn)
    await llama.run(batch_line)
    assert len(llama._kept._kept) == 1  # the turn's context, kept as the line overwrote it
    calls: list[int] = []
    monkeypatch.setattr(llama._llama, "eval", evaluated_tokens(llama._llama, calls))
    again = await llama.run(turn)
    assert again.text == first.text
    assert calls[0] <= 2  # not the prompt's ~40 tokens: it came back from the cache
    assert llama._kept._kept == []  # it is the live context again, kept when next overwritten


async def test_no_context_is_kept_beyond_the_cache_s_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LlamaCppBackend(n_ctx=512, n_threads=1, prompt_cache_mb=0.1)  # less than one short chat
    backend.load()
    await backend.run(chat("What color is the sky?", max_tokens=4))
    await backend.run(chat("Name three animals that live in the sea.", max_tokens=4))
    assert backend._kept._kept == []
    calls: list[int] = []
    monkeypatch.setattr(backend._llama, "eval", evaluated_tokens(backend._llama, calls))
    await backend.run(chat("What color is the sky?", max_tokens=4))
    assert calls[0] > 2  # evaluated afresh
