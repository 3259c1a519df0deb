"""Request bodies of the HTTP API (pydantic), checked at the door: a bad value is a 422, never clamped."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from deployments.types import MAX_SPEECH_CHARS
from modalities.base import Seed
from modalities.llm import MAX_CHOICES, MAX_STOPS, MaxTokens, ResponseFormatIn, Temperature, TopP
from modalities.text2pic import MAX_IMAGE_SIDE, Steps
from modalities.tts import Speed

SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class OpenAIModel(BaseModel):
    # OpenAI's clients send fields that change nothing here (`user`, `metadata`, ...): ignore them, as
    # OpenAI does. Fields that would change the answer are declared, and honoured or refused.
    model_config = ConfigDict(extra="ignore")


NOT_SUPPORTED = "is not supported by this platform"


def refuse_when_set(value: object) -> object:
    """A field this platform cannot honour: accepted only when left out or null."""
    if value is not None:
        raise ValueError(NOT_SUPPORTED)
    return value


class ImageURL(OpenAIModel):
    url: Annotated[str, Field(min_length=1, description="A data URL (data:image/png;base64,...) or an http(s) URL.")]
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(OpenAIModel):
    """A part of a message's content: `text`, `image_url` (honoured: see the README), or `input_audio`
    and `file` (refused with a 400 naming the part)."""

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCallIn(OpenAIModel):
    name: str
    arguments: str = "{}"


class ToolCallIn(OpenAIModel):
    """A call the assistant made, in a history sent back."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(OpenAIModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant
    tool_call_id: str | None = None  # tool

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text or "" for part in self.content if part.type == "text")


FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionSpec(OpenAIModel):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: Annotated[str | None, Field(max_length=10_000)] = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(OpenAIModel):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(OpenAIModel):
    name: str


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormatBody(ResponseFormatIn):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(OpenAIModel):
    include_usage: bool = False


Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SamplingFields(OpenAIModel):
    model: str
    temperature: Temperature = 0.7
    top_p: TopP = 1.0
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES, description="Choices, each a generation of its own.")] = 1
    stop: str | list[str] | None = None
    seed: Seed = None
    frequency_penalty: Penalty = 0.0
    presence_penalty: Penalty = 0.0
    logit_bias: dict[str, float] | None = Field(default=None, description="Refused unless empty.")
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:  # token ids are the model's own; the backends differ
            raise ValueError(NOT_SUPPORTED)
        return value


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    tools: Annotated[list[ToolIn] | None, Field(max_length=128)] = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatBody | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int | None, Field(ge=0, le=20)] = None
    metadata: dict[str, str] | None = Field(
        default=None,
        description="Stored nowhere; `avatar` names a tenant's avatar, whose instructions lead as the system prompt.",
    )
    # Refused when set: audio output, predicted outputs, the legacy function fields, web search.
    audio: Any = Field(default=None, description="Refused: audio output is not supported.")
    modalities: list[str] | None = Field(default=None, description='Only ["text"] is accepted.')
    prediction: Any = Field(default=None, description="Refused.")
    functions: Any = Field(default=None, description="Refused: use `tools`.")
    function_call: Any = Field(default=None, description="Refused: use `tool_choice`.")
    web_search_options: Any = Field(default=None, description="Refused.")
    reasoning_effort: Any = Field(default=None, description="Refused: the models here do not reason.")
    verbosity: Any = Field(default=None, description="Refused.")

    _refused = field_validator(
        "audio", "prediction", "functions", "function_call", "web_search_options", "reasoning_effort", "verbosity"
    )(refuse_when_set)

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and set(value) - {"text"}:
            raise ValueError('only ["text"] is supported')
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def tool_choice_name(self) -> str:
        if self.tool_choice is None:
            return "auto"
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return self.tool_choice


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    max_tokens: MaxTokens = 16
    logprobs: Annotated[int | None, Field(ge=0, le=5)] = None
    echo: bool = False
    best_of: Annotated[int | None, Field(ge=1, le=MAX_CHOICES)] = None
    suffix: str | None = Field(default=None, description="Refused unless empty: no backend fills in the middle.")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt is supported")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError(NOT_SUPPORTED)
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        # Choosing the best of several needs their logprobs, which no backend here gives.
        if value is not None and value != info.data.get("n", 1):
            raise ValueError("only best_of equal to n is supported")
        return value


EmbeddingText = Annotated[str, Field(min_length=1, max_length=100_000)]


class EmbeddingRequestIn(OpenAIModel):
    # OpenAI also takes token arrays; this platform's models tokenize for themselves (a 422).
    input: EmbeddingText | Annotated[list[EmbeddingText], Field(min_length=1, max_length=2048)]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int | None, Field(ge=1, description="Must be the model's own dimension.")] = None
    truncate: bool = Field(
        default=False,
        description="Cut inputs longer than the model's window to fit it; without it they are a 400 naming the limit.",
    )

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class SpeechRequestIn(OpenAIModel):
    model: str
    input: Annotated[str, Field(min_length=1, max_length=MAX_SPEECH_CHARS)]
    voice: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        default="mp3",
        description="mp3 (audio/mpeg), opus (Ogg Opus, audio/ogg), aac (ADTS, audio/aac), flac, wav, or pcm:"
        " raw 16-bit little-endian mono samples at 24 kHz (audio/pcm).",
    )
    speed: Speed = 1.0
    # OpenAI's fields that would change the speech and that no voice here honours: refused.
    instructions: str | None = Field(default=None, description="Not supported: a non-empty value is a 422.")
    stream_format: Literal["audio"] = Field(default="audio", description="Only `audio`: the file in one answer.")

    @field_validator("instructions")
    @classmethod
    def _no_instructions(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("the voices here take no instructions")
        return value


class ImageGenerationRequest(OpenAIModel):
    prompt: Annotated[str, Field(min_length=1, max_length=4000)]
    model: str | None = None
    n: Annotated[int, Field(ge=1, le=4)] = 1
    size: str = "256x256"
    response_format: Literal["b64_json", "url"] = "b64_json"
    steps: Steps = None
    seed: Seed = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        match = SIZE_PATTERN.match(value)
        if not match:
            raise ValueError("size must be WIDTHxHEIGHT, e.g. 256x256")
        width, height = int(match.group(1)), int(match.group(2))
        if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
            raise ValueError(f"each side must be between 1 and {MAX_IMAGE_SIDE} pixels")
        return value

    def dimensions(self) -> tuple[int, int]:
        width, _, height = self.size.partition("x")
        return int(width), int(height)
