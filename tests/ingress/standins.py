"""In-process stand-ins for what the ingress reaches through Ray, so that its app runs without a cluster.

- `InProcessHandle`: a Serve `DeploymentHandle` of one modality deployment, whose replica (a real
  `ModalityServer`) lives in this process: `.options(**kw)`, `.run.remote(request)`,
  `.stream.remote(request)` (an async iterator with `.options(stream=True)`), `.status.remote()`.
- `InProcessActor`: a Ray actor handle of an object in this process (the real `SchedulerActor`):
  `.method.remote(*args)` runs the method on the running event loop and returns an awaitable.
- `RecordingExecutor`: the workflow executor's place; it records the calls and runs nothing.
- `CannedBackend`: a model backend with fixed, valid answers, for services whose tests need only
  the call to happen.

What crosses a process boundary in Ray crosses a pickle here: requests, results and errors are
copied through `pickle`, and an error comes back wrapped as Ray wraps it (`RayTaskError`, made an
instance of its cause's class), so the ingress unwraps here what it unwraps on a cluster.

The stand-ins depend only on those call interfaces; the constructors of the platform's own
classes are called in one place, the factory in tests/ingress/conftest.py.
"""

from __future__ import annotations

import asyncio
import io
import math
import pickle
import struct
import traceback
import wave
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ray.exceptions import RayTaskError

from deployments.types import (
    CaptionResult,
    EmbedResult,
    ImageResult,
    InvalidInput,
    LLMChunk,
    LLMResult,
    SpeechResult,
    TranscribeResult,
)


def carried(value: Any) -> Any:
    """`value` as another process receives it from Ray: a copy, through pickle."""
    return pickle.loads(pickle.dumps(value))


def raised_remotely(exc: BaseException, function_name: str) -> BaseException:
    """`exc` as a caller gets it from a Ray task or actor call that raised it."""
    trace = "".join(traceback.format_exception(exc))
    error: BaseException = RayTaskError(function_name, trace, carried(exc)).as_instanceof_cause()
    return error


async def _remote_call(function: Callable[..., Any], name: str, args: tuple[Any, ...]) -> Any:
    try:
        result = function(*carried(args))
        if asyncio.iscoroutine(result):
            result = await result
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise raised_remotely(exc, name) from None
    return carried(result)


def _start(function: Callable[..., Any], name: str, args: tuple[Any, ...]) -> Awaitable[Any]:
    # Scheduled at once, as Ray submits a call whether or not anyone awaits its result (the
    # scheduler client fires releases and renewals and forgets them). Shielded: a caller that gives
    # up does not cancel the call, as on a cluster.
    task = asyncio.ensure_future(_remote_call(function, name, args))
    task.add_done_callback(_consume)
    return asyncio.shield(task)


def _consume(task: asyncio.Future[Any]) -> None:
    # A call nobody awaited may fail (a release after a test ended): no "never retrieved" warning.
    if not task.cancelled():
        task.exception()


class _ActorMethod:
    def __init__(self, target: Any, name: str) -> None:
        self._target = target
        self._name = name

    def remote(self, *args: Any) -> Awaitable[Any]:
        return _start(getattr(self._target, self._name), self._name, args)


class InProcessActor:
    """A Ray actor handle of `target`, an object in this process: `handle.method.remote(*args)`."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> _ActorMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return _ActorMethod(self._target, name)


class _HandleMethod:
    def __init__(self, handle: InProcessHandle, name: str) -> None:
        self._handle = handle
        self._name = name

    def remote(self, *args: Any) -> Any:
        replica = self._handle.replica()
        function = getattr(replica, self._name)
        if self._handle.streaming:
            return _remote_stream(function, self._name, args)
        return _start(function, self._name, args)


async def _remote_stream(function: Callable[..., AsyncIterator[Any]], name: str, args: tuple[Any, ...]) -> Any:
    try:
        async for item in function(*carried(args)):
            yield carried(item)
    except Exception as exc:
        raise raised_remotely(exc, name) from None


class InProcessHandle:
    """A Serve `DeploymentHandle` of one modality deployment with one replica in this process.

    `make_replica` builds the replica on first use, so that a test run loads only the models its
    tests call. Options other than `stream` (`_by_reference`, ...) change nothing in one process.
    """

    def __init__(self, make_replica: Callable[[], Any], streaming: bool = False) -> None:
        self._make_replica = make_replica
        self._replica: list[Any] = []  # shared by every handle that `options` derives
        self.streaming = streaming
        self.options_seen: list[dict[str, Any]] = []

    def replica(self) -> Any:
        if not self._replica:
            self._replica.append(self._make_replica())
        return self._replica[0]

    def options(self, *, stream: bool | None = None, **options: Any) -> InProcessHandle:
        self.options_seen.append({"stream": stream, **options})
        derived = InProcessHandle(self._make_replica, self.streaming if stream is None else stream)
        derived._replica = self._replica
        derived.options_seen = self.options_seen
        return derived

    @property
    def run(self) -> _HandleMethod:
        return _HandleMethod(self, "run")

    @property
    def stream(self) -> _HandleMethod:
        return _HandleMethod(self, "stream")

    @property
    def status(self) -> _HandleMethod:
        return _HandleMethod(self, "status")


class RecordingExecutor:
    """Stands in for the workflow executor actor: every call is recorded as `(method, args)` and
    answers None. Running workflows is the Ray tests' business; here a workflow stays pending."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., Awaitable[None]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record

    def keys_of(self, method: str) -> list[Any]:
        """The first argument (a workflow key) of every call of `method`."""
        return [args[0] for name, args in self.calls if name == method and args]


# ---------------------------------------------------------------- a backend with fixed answers


def silent_wav(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    """A valid mono 16-bit WAV of silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack("<h", 0) * int(rate * seconds))
    return buffer.getvalue()


def tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A valid RGB PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


class CannedBackend:
    """Answers every request of its `service` at once with a fixed, well-formed result.

    It refuses an empty text as the real backends do (`InvalidInput`), so that the route's own
    checks, not the backend's, are what a test of a 4xx sees.
    """

    name = "canned"

    def __init__(self, service: str, text: str = "canned answer") -> None:
        self.service = service
        self.text = text
        self.model = f"canned-{service}"
        self.calls = 0

    def load(self) -> None:
        pass

    async def run(self, request: Any) -> Any:
        self.calls += 1
        answer = CANNED_ANSWERS.get(self.service)
        if answer is None:
            raise InvalidInput(f"no canned answer for {self.service!r}")
        return answer(self, request)

    async def stream(self, request: Any) -> AsyncIterator[LLMChunk]:
        self.calls += 1
        words = self.text.split(" ")
        for word in words[:-1]:
            yield LLMChunk(text=word + " ")
        yield LLMChunk(text=words[-1], finish_reason="stop", prompt_tokens=3, completion_tokens=len(words))


def _speech(backend: CannedBackend, request: Any) -> SpeechResult:
    if not request.text.strip():
        raise InvalidInput("the text is empty")
    return SpeechResult(silent_wav(), audio_seconds=0.5, sample_rate=16_000, model=backend.model)


def _images(backend: CannedBackend, request: Any) -> ImageResult:
    images = [tiny_png(request.width, request.height) for _ in range(request.n)]
    return ImageResult(images, request.width, request.height, request.steps, model=backend.model)


def _vectors(backend: CannedBackend, request: Any) -> EmbedResult:
    vectors = [_unit_vector(text) for text in request.texts]
    return EmbedResult(vectors, prompt_tokens=sum(len(t.split()) for t in request.texts), model=backend.model)


# Each service's canned answer, by the modality's result type.
CANNED_ANSWERS: dict[str, Callable[[CannedBackend, Any], Any]] = {
    "llm": lambda b, r: LLMResult(b.text, "stop", prompt_tokens=3, completion_tokens=2, model=b.model),
    "stt": lambda b, r: TranscribeResult(b.text, audio_seconds=0.5, language="en", model=b.model),
    "tts": _speech,
    "pic2text": lambda b, r: CaptionResult("\n".join(b.text for _ in r.images), model=b.model),
    "text2pic": _images,
    "embed": _vectors,
}


def _unit_vector(text: str, dimensions: int = 8) -> list[float]:
    seed = zlib.crc32(text.encode())
    raw = [float((seed >> shift) % 7 + 1) for shift in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]
