"""The shared vocabulary of the model deployments: requests, results, errors and the backend protocol.

Every modality has one request and one result type. A backend is one small class with an async
`run` (and, for `llm`, `stream`; for `text2video`, a `stream` of `Progress` chunks then its result);
the failover chain and the Serve deployments only know this protocol, never a concrete engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from common.errors import PlatformError

# ---------------------------------------------------------------- errors


class ModelError(PlatformError):
    """An error raised by a backend or a deployment, with a stable `code` the ingress maps to HTTP.

    `retryable` tells the failover chain (and later the workflow executor) whether another
    attempt, on this backend or the next, may succeed.
    """

    code = "model_error"
    status = 502
    retryable = True


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

# What a backend can do beyond plain text generation (`Backend.capabilities`); a request names the
# ones it needs (`LLMRequest.needs`) and the failover chain skips backends that lack one.
TOOLS = "tools"
JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
LOGPROBS = "logprobs"
VISION = "vision"
STREAMING = "streaming"


@dataclass
class ToolSpec:
    """A function the model may call: OpenAI's `tools[].function`."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass
class ToolCall:
    """A call the model made; `arguments` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass
class ChatMessage:
    """One turn. An assistant turn may carry `tool_calls`; a `tool` turn answers the call
    `tool_call_id` (of the function `name`). `images` (PNG or JPEG bytes) go only to backends with
    the `vision` capability; the ingress turns them into captions for the others."""

    role: str
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    images: list[bytes] = field(default_factory=list)


@dataclass
class ResponseFormat:
    """OpenAI's `response_format`: `text`, `json_object`, or `json_schema` with its `schema`."""

    type: str = "text"
    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool = False


@dataclass
class LLMRequest:
    """A chat (`messages`) or a plain completion (`prompt`); exactly one is set.

    `tool_choice` is "auto", "none", "required", or the name of one of `tools`. `n` choices are
    `n` generations (seeds `seed`, `seed + 1`, ... when a seed is given), charged as such.
    """

    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1
    # Set for `low`-priority work (batch lines, low workflow nodes): the call runs behind the
    # replica's others, yielding its engine to them (deployments/llm.py: EngineTurns).
    background: bool = False

    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def needs(self) -> dict[str, str]:
        """The capabilities this request needs, each with the request field that needs it."""
        needed: dict[str, str] = {}
        if self.uses_tools():
            needed[TOOLS] = "tools"
        if self.response_format is not None and self.response_format.type in (JSON_SCHEMA, JSON_OBJECT):
            needed[self.response_format.type] = "response_format"
        if self.logprobs:
            needed[LOGPROBS] = "logprobs"
        for index, message in enumerate(self.messages or []):
            if message.images:
                needed[VISION] = f"messages.{index}.content"
                break
        return needed


@dataclass
class TokenLogprob:
    """One generated token's log probability, with the most likely alternatives (OpenAI's shape)."""

    token: str
    logprob: float
    top_logprobs: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class LLMChunk:
    """A piece of a streamed generation; the last one carries `finish_reason` and the usage counts.

    A tool call is streamed whole in one chunk (`tool_calls`); the ingress splits it into OpenAI's deltas.
    """

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str = ""  # the model that produced it (set by the failover chain)
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


@dataclass
class LLMChoice:
    """One of the `n` answers to a request."""

    text: str
    finish_reason: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


@dataclass
class LLMResult:
    """The first answer (its text, finish reason, tool calls), the others for `n` > 1 in
    `more_choices`, and the usage of all of them."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    more_choices: list[LLMChoice] = field(default_factory=list)

    def choices(self) -> list[LLMChoice]:
        first = LLMChoice(self.text, self.finish_reason, self.tool_calls, self.logprobs)
        return [first, *self.more_choices]


# ---------------------------------------------------------------- stt


@dataclass
class TranscribeRequest:
    audio: bytes  # a WAV file, 16-bit PCM
    language: str | None = None
    # Text said before the audio, to steer spelling and style (Whisper's initial prompt).
    prompt: str | None = None
    # 0, as in OpenAI's API, lets the engine raise the temperature where decoding fails; above 0,
    # every segment is sampled at it.
    temperature: float = 0.0
    word_timestamps: bool = False  # fill `TranscribeResult.words`, which costs Whisper an alignment pass
    # Whisper encodes 30 s of audio, padded, whatever the clip's length. A short clip encoded in a
    # shorter window (`window_s`) costs a fraction of that, at some cost in accuracy (see
    # `FasterWhisperBackend`); backends that have no such window ignore it, as do clips too long for it.
    window_s: float | None = None


@dataclass
class Segment:
    """A stretch of a transcript and when it is said, in seconds from the start of the audio."""

    start: float
    end: float
    text: str


@dataclass
class Word:
    start: float
    end: float
    word: str


@dataclass
class TranscribeResult:
    text: str
    audio_seconds: float
    language: str | None = None
    model: str = ""
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)  # only when the request asked for them


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


# ---------------------------------------------------------------- text2video


@dataclass
class VideoRequest:
    """Text to video, or image to video with a reference `image` (PNG or JPEG) as the first frame."""

    prompt: str
    seconds: float = 4.0
    width: int = 256
    height: int = 256
    fps: int = 8
    steps: int = 20
    seed: int | None = None
    negative_prompt: str | None = None
    image: bytes | None = None

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))


@dataclass
class VideoResult:
    video: bytes  # an MP4 file (H.264)
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    model: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


@dataclass
class Progress:
    """A chunk of a long call's stream before its result: `step` of `steps` done (denoising steps)."""

    step: int
    steps: int
    model: str = ""

    @property
    def percent(self) -> int:
        return min(100, self.step * 100 // max(1, self.steps))


# ---------------------------------------------------------------- embed


@dataclass
class EmbedRequest:
    texts: list[str]  # one vector each, in order
    truncate: bool = False  # cut texts longer than the model's window, instead of refusing them
    dimensions: int | None = None  # the vectors' dimension the caller expects: refused if not the model's
    # Set for `low`-priority work (batch lines, low workflow nodes): the encoder runs it in a thread
    # of the lowest CPU priority, so it takes only the CPU that interactive calls leave.
    background: bool = False


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
    capabilities: list[str] = field(default_factory=list)  # see `TOOLS`, `JSON_SCHEMA`, ...


@runtime_checkable
class Backend(Protocol):
    """One engine or provider for one modality.

    `load()` is called once, in the replica; it raises `ModelUnavailable` with a reason a person
    can act on when the weights or credentials are missing. `run()` takes the modality's request
    and returns its result. A backend may declare `capabilities` (a frozenset of `TOOLS`,
    `JSON_SCHEMA`, ...): what it honours of a request's `needs()`; none when it declares nothing.
    """

    name: str
    model: str

    def load(self) -> None: ...

    async def run(self, request: Any) -> Any: ...


@runtime_checkable
class StreamingBackend(Backend, Protocol):
    """A backend that can also stream its output (the `llm` engines), or its progress before its
    result (`Progress` chunks, then the result: the `text2video` engines)."""

    def stream(self, request: Any) -> AsyncIterator[Any]: ...
