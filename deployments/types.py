"""The shared vocabulary of the model deployments: requests, results, errors and the backend protocol.

Every modality has one request and one result type. A backend is one small class with an async
`run` (and, for `llm`, `stream`); the failover chain and the Serve deployments only know this
protocol, never a concrete engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

SERVICES: tuple[str, ...] = ("llm", "stt", "tts", "pic2text", "text2pic", "embed")


# ---------------------------------------------------------------- errors


class ModelError(Exception):
    """An error raised by a backend or a deployment, with a stable `code` the ingress maps to HTTP.

    `retryable` tells the failover chain (and later the workflow executor) whether another
    attempt, on this backend or the next, may succeed.
    """

    code: ClassVar[str] = "model_error"
    status: ClassVar[int] = 502
    retryable: ClassVar[bool] = True

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable across Ray's process boundary with its message and details.
        return (type(self), (self.message, self.details))


class InvalidInput(ModelError):
    """The input cannot be used (a WAV that is not a WAV, an empty prompt): the client's mistake."""

    code = "invalid_input"
    status = 400
    retryable = False


class InputTooLarge(InvalidInput):
    """The input is well formed but beyond what the model accepts (e.g. `max_tokens` over its limit)."""

    code = "input_too_large"
    status = 422


class ModelUnavailable(ModelError):
    """No backend can serve: weights missing offline, every backend cooling down, and so on."""

    code = "model_unavailable"
    status = 503
    retryable = True


class BackendFailure(ModelError):
    """A backend failed in a way another backend (or a later attempt) may not: a cloud 5xx, a crash."""

    code = "backend_failure"
    status = 502
    retryable = True


class BackendTimeout(BackendFailure):
    """A backend did not answer in time."""

    code = "backend_timeout"
    status = 504


# ---------------------------------------------------------------- llm


@dataclass
class ChatMessage:
    role: str
    content: str


@dataclass
class LLMRequest:
    """A chat (`messages`) or a plain completion (`prompt`); exactly one is set."""

    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class LLMChunk:
    """A piece of a streamed generation; the last one carries `finish_reason` and the usage counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class LLMResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str = ""


# ---------------------------------------------------------------- stt


@dataclass
class TranscribeRequest:
    audio: bytes  # a WAV file, 16-bit PCM
    language: str | None = None


@dataclass
class TranscribeResult:
    text: str
    audio_seconds: float
    language: str | None = None
    model: str = ""


# ---------------------------------------------------------------- tts


# The longest text one speech call takes (OpenAI's limit too): about five minutes of speech. Far
# longer texts would hold a tts replica for many minutes and answer with hundreds of megabytes.
MAX_SPEECH_CHARS = 4096


@dataclass
class SpeechRequest:
    text: str
    voice: str | None = None  # None, or a name the backend does not know, means its default voice
    speed: float = 1.0


@dataclass
class SpeechResult:
    wav: bytes
    audio_seconds: float
    sample_rate: int
    model: str = ""


# ---------------------------------------------------------------- pic2text


@dataclass
class CaptionRequest:
    images: list[bytes]  # PNG or JPEG files
    prompt: str = ""
    max_tokens: int = 40


@dataclass
class CaptionResult:
    text: str
    model: str = ""


# ---------------------------------------------------------------- text2pic


@dataclass
class ImageRequest:
    prompt: str
    width: int = 256
    height: int = 256
    steps: int = 20
    n: int = 1
    seed: int | None = None
    negative_prompt: str | None = None


@dataclass
class ImageResult:
    images: list[bytes]  # PNG files
    width: int
    height: int
    steps: int
    model: str = ""


# ---------------------------------------------------------------- embed


@dataclass
class EmbedRequest:
    texts: list[str]  # one vector each, in order


@dataclass
class EmbedResult:
    vectors: list[list[float]]  # unit length, one per text
    prompt_tokens: int  # the tokens embedded, after truncation to the model's length
    model: str = ""


# ---------------------------------------------------------------- backends


@dataclass
class BackendInfo:
    """What `/v1/models` and `/readyz` say about one backend."""

    name: str  # the backend's kind, e.g. "llama_cpp", "tiny_random", "gemini"
    model: str  # the model it serves, e.g. "SmolLM2-135M-Instruct"
    ready: bool
    reason: str | None = None
    voices: list[str] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """One engine or provider for one modality.

    `load()` is called once, in the replica; it raises `ModelUnavailable` with a reason a person
    can act on when the weights or credentials are missing. `run()` takes the modality's request
    and returns its result.
    """

    name: str
    model: str

    def load(self) -> None: ...

    async def run(self, request: Any) -> Any: ...


@runtime_checkable
class StreamingBackend(Backend, Protocol):
    """A backend that can also stream its output (the `llm` engines)."""

    def stream(self, request: Any) -> AsyncIterator[Any]: ...
