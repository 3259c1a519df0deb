"""What each service consumes and produces, its node parameters, and how a node's input is composed.

A node's input is its own prompt, then its own `inputs` entry, then, for each incoming edge in the
order the edges are listed, the edge's prompt and the upstream node's output (API.md). Text parts
are joined with newlines; media parts (audio, images) go to the services that consume them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from dag.prompts import INPUT, Task, llm_prompt
from deployments.types import (
    MAX_SPEECH_CHARS,
    CaptionRequest,
    ChatMessage,
    EmbedRequest,
    ImageRequest,
    LLMRequest,
    SpeechRequest,
    TranscribeRequest,
)

TEXT = "text"
AUDIO = "audio"
IMAGE = "image"
VECTOR = "vector"  # an embedding; no service consumes one, so an `embed` node is always a sink

TEXT_TYPE = "text/plain; charset=utf-8"
VECTOR_TYPE = "application/json"
CONTENT_TYPES = {TEXT: TEXT_TYPE, AUDIO: "audio/wav", IMAGE: "image/png", VECTOR: VECTOR_TYPE}


@dataclass(frozen=True)
class ServiceIO:
    consumes: str  # the kind of upstream output the service takes
    produces: str
    media_inputs: tuple[int, int | None] = (0, 0)  # how many media parts it takes: (at least, at most)
    max_text: int | None = None  # the longest composed text it takes, in characters


SERVICE_IO: dict[str, ServiceIO] = {
    "llm": ServiceIO(consumes=TEXT, produces=TEXT),
    "stt": ServiceIO(consumes=AUDIO, produces=TEXT, media_inputs=(1, 1)),
    "tts": ServiceIO(consumes=TEXT, produces=AUDIO, max_text=MAX_SPEECH_CHARS),
    "pic2text": ServiceIO(consumes=IMAGE, produces=TEXT, media_inputs=(1, None)),
    "text2pic": ServiceIO(consumes=TEXT, produces=IMAGE),
    "embed": ServiceIO(consumes=TEXT, produces=VECTOR),
}


def kind_of(content_type: str) -> str:
    """`text`, `audio` or `image`, from a content type."""
    if content_type.startswith("audio/"):
        return AUDIO
    if content_type.startswith("image/"):
        return IMAGE
    if content_type == VECTOR_TYPE:
        return VECTOR
    return TEXT


@dataclass(frozen=True)
class Output:
    """A node's output (or a media input): bytes with their content type."""

    data: bytes
    content_type: str

    @property
    def kind(self) -> str:
        return kind_of(self.content_type)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    @classmethod
    def of_text(cls, text: str) -> Output:
        return cls(text.encode("utf-8"), TEXT_TYPE)


# ---------------------------------------------------------------- node parameters


# The engines take 32-bit seeds (llama.cpp, and torch after `seed + i`); a larger or negative one
# would be wrapped, or crash the call, so it is a 422 at the door.
MAX_SEED = 2**32 - 1
Seed = Annotated[int | None, Field(ge=0, le=MAX_SEED)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMParams(Params):
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 256
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: Seed = None
    system: Annotated[str | None, Field(max_length=10_000)] = None
    # What the platform makes of the composed input (dag/prompts.py). Each check runs even when its
    # field is left out (validate_default), so a 422 names the missing field.
    task: Task = "generate"
    target_language: Annotated[str | None, Field(max_length=64, validate_default=True)] = None
    template: Annotated[str | None, Field(max_length=10_000, validate_default=True)] = None

    @field_validator("target_language")
    @classmethod
    def _language_for_translate(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task")  # absent when the task itself was invalid: that error suffices
        if task == "translate" and not (value and value.strip()):
            raise ValueError("the `translate` task needs a target_language")
        if task not in (None, "translate") and value is not None:
            raise ValueError("only the `translate` task takes a target_language")
        return value

    @field_validator("template")
    @classmethod
    def _template_with_input(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task")
        if task == "template" and (value is None or INPUT not in value):
            raise ValueError(f"the `template` task needs a template containing {INPUT}")
        if task not in (None, "template") and value is not None:
            raise ValueError("only the `template` task takes a template")
        return value


class STTParams(Params):
    language: Annotated[str | None, Field(max_length=16)] = None


class TTSParams(Params):
    voice: Annotated[str | None, Field(max_length=64)] = None
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0


class Pic2TextParams(Params):
    max_tokens: Annotated[int, Field(ge=1, le=256)] = 40


class Text2PicParams(Params):
    width: Annotated[int, Field(ge=1, le=2048)] = 256
    height: Annotated[int, Field(ge=1, le=2048)] = 256
    steps: Annotated[int | None, Field(ge=1, le=100)] = None
    seed: Seed = None
    negative_prompt: Annotated[str | None, Field(max_length=10_000)] = None


PARAMS: dict[str, type[Params]] = {
    "llm": LLMParams,
    "stt": STTParams,
    "tts": TTSParams,
    "pic2text": Pic2TextParams,
    "text2pic": Text2PicParams,
    "embed": Params,  # the model has no knobs: any param is a 422
}


def compose(parts: list[str | Output]) -> tuple[str, list[Output]]:
    """The joined text parts (empty ones skipped) and the media parts, in order."""
    texts: list[str] = []
    media: list[Output] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                texts.append(part)
        elif part.kind == TEXT:
            if part.data:
                texts.append(part.text)
        else:
            media.append(part)
    return "\n".join(texts), media


def build_request(service: str, params: dict[str, Any], text: str, media: list[Output]) -> Any:
    """The modality request for a node, from its composed input and its (validated) params."""
    if service == "llm":
        p = LLMParams.model_validate(params)
        prompt = llm_prompt(p.task, text, p.target_language, p.template)
        messages = ([ChatMessage("system", p.system)] if p.system else []) + [ChatMessage("user", prompt)]
        return LLMRequest(
            messages=messages,
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            stop=p.stop,
            seed=p.seed,
        )
    if service == "stt":
        return TranscribeRequest(audio=media[0].data, language=STTParams.model_validate(params).language)
    if service == "tts":
        t = TTSParams.model_validate(params)
        return SpeechRequest(text=text, voice=t.voice, speed=t.speed)
    if service == "pic2text":
        c = Pic2TextParams.model_validate(params)
        return CaptionRequest(images=[m.data for m in media], prompt=text, max_tokens=c.max_tokens)
    if service == "text2pic":
        i = Text2PicParams.model_validate(params)
        steps = {"steps": i.steps} if i.steps else {}
        return ImageRequest(
            prompt=text, width=i.width, height=i.height, seed=i.seed, negative_prompt=i.negative_prompt, **steps
        )
    if service == "embed":
        return EmbedRequest(texts=[text])
    raise ValueError(f"unknown service {service!r}")


def output_of(service: str, result: Any) -> Output:
    """A modality's result as a node output."""
    if service in ("llm", "stt", "pic2text"):
        return Output.of_text(result.text)
    if service == "tts":
        return Output(result.wav, "audio/wav")
    if service == "text2pic":
        return Output(result.images[0], "image/png")
    if service == "embed":
        vector = {"model": result.model, "embedding": result.vectors[0], "tokens": result.prompt_tokens}
        return Output(json.dumps(vector).encode(), VECTOR_TYPE)
    raise ValueError(f"unknown service {service!r}")
