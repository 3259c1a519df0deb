"""Request bodies of the HTTP API (pydantic), checked at the door: a bad value is a 422, never clamped."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dag.compose import Seed
from deployments.types import MAX_SPEECH_CHARS

MAX_IMAGE_SIDE = 2048
SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class OpenAIModel(BaseModel):
    # OpenAI's clients send fields we do not use (`user`, `logprobs`, ...): ignore them, as OpenAI does.
    model_config = ConfigDict(extra="ignore")


class ContentPart(OpenAIModel):
    type: str
    text: str | None = None


class ChatMessageIn(OpenAIModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class SamplingFields(OpenAIModel):
    model: str
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    n: Annotated[int, Field(ge=1, le=1, description="Only one choice is generated.")] = 1
    stop: str | list[str] | None = None
    seed: Seed = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    max_tokens: Annotated[int, Field(ge=1)] = 16

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt is supported")
        return value


EmbeddingText = Annotated[str, Field(min_length=1, max_length=100_000)]


class EmbeddingRequestIn(OpenAIModel):
    # OpenAI also takes token arrays; this platform's models tokenize for themselves (a 422).
    input: EmbeddingText | Annotated[list[EmbeddingText], Field(min_length=1, max_length=2048)]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int | None, Field(ge=1, description="Must be the model's own dimension.")] = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class SpeechRequestIn(OpenAIModel):
    model: str
    input: Annotated[str, Field(min_length=1, max_length=MAX_SPEECH_CHARS)]
    voice: str | None = None
    response_format: Literal["wav", "pcm"] = "wav"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0


class ImageGenerationRequest(OpenAIModel):
    prompt: Annotated[str, Field(min_length=1, max_length=4000)]
    model: str | None = None
    n: Annotated[int, Field(ge=1, le=4)] = 1
    size: str = "256x256"
    response_format: Literal["b64_json"] = "b64_json"
    steps: Annotated[int | None, Field(ge=1, le=100)] = None
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
