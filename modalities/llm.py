"""`llm`: text in, text out (chat or plain completion), on llama.cpp, vLLM, Gemini or Doubao (Ark)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from deployments.types import ChatMessage, LLMRequest, LLMResult, ResponseFormat
from modalities.base import TEXT, TEXT_TYPE, Modality, Output, Params, Seed
from modalities.prompts import INPUT, Task, llm_prompt
from scheduler.costs import CostModel, Usage

# The bounds of the sampling fields, shared by the HTTP schemas and the workflow params. The upper
# bound of `max_tokens` is the deployment's setting (`llm_max_tokens`), checked with the params'
# validation context: one check for interactive calls, tasks and nodes.
MaxTokens = Annotated[int, Field(ge=1)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MAX_STOPS = 4
MAX_TOKENS_CONTEXT = "llm_max_tokens"  # the validation context's key for the model's limit


def max_tokens_reason(max_tokens: int, context: Any) -> str | None:
    """Why `max_tokens` is over the model's limit in this validation context, or None."""
    limit = (context or {}).get(MAX_TOKENS_CONTEXT)
    if limit is not None and max_tokens > limit:
        return f"must be at most {limit}, the model's limit"
    return None


MAX_CHOICES = 8  # `n`: OpenAI's clients rarely ask for more, and each is a whole generation


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`; the schema itself is checked by the engine that enforces it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = "response"
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(BaseModel):
    """OpenAI's `response_format`: `text`, `json_object`, or `json_schema`; shared by chat and workflow nodes."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(default=None, validate_default=True)  # checked when left out

    @field_validator("json_schema")
    @classmethod
    def _schema_for_its_type(cls, value: JsonSchemaFormat | None, info: ValidationInfo) -> JsonSchemaFormat | None:
        kind = info.data.get("type")
        if kind == "json_schema" and value is None:
            raise ValueError("the `json_schema` type needs a json_schema")
        return value

    def to_request(self) -> ResponseFormat | None:
        if self.type == "text":
            return None
        if self.type == "json_object" or self.json_schema is None:
            return ResponseFormat("json_object")
        spec = self.json_schema
        return ResponseFormat("json_schema", spec.json_schema, spec.name, bool(spec.strict))


class LLMParams(Params):
    max_tokens: MaxTokens = 256
    temperature: Temperature = 0.7
    top_p: TopP = 1.0
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOPS)
    seed: Seed = None
    system: Annotated[str | None, Field(max_length=10_000)] = None
    # What the platform makes of the composed input (modalities/prompts.py). Each check runs even when its
    # field is left out (validate_default), so a 422 names the missing field.
    task: Task = "generate"
    target_language: Annotated[str | None, Field(max_length=64, validate_default=True)] = None
    template: Annotated[str | None, Field(max_length=10_000, validate_default=True)] = None
    # The node's output is JSON that follows it (typed JSON for the nodes downstream).
    response_format: ResponseFormatIn | None = None

    @field_validator("max_tokens")
    @classmethod
    def _within_the_model(cls, value: int, info: ValidationInfo) -> int:
        reason = max_tokens_reason(value, info.context)
        if reason:
            raise ValueError(reason)
        return value

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


def texts_of(request: LLMRequest) -> list[str]:
    return [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]


class LLM(Modality[LLMRequest, LLMResult, LLMParams]):
    name = "llm"
    request_type = LLMRequest
    result_type = LLMResult
    params = LLMParams
    consumes = TEXT
    produces = TEXT
    content_type = TEXT_TYPE
    # Generating a token costs more than reading one: decode is sequential, prefill is batched.
    cost_model = CostModel({"prompt_tokens": 1.0, "output_tokens": 2.0})
    backends = {
        "llama_cpp": "deployments.llm:LlamaCppBackend",
        "vllm": "deployments.llm:VllmBackend",
        "gemini": "deployments.gemini:GeminiTextBackend",
        "doubao": "deployments.ark:DoubaoLLMBackend",
        "echo_fixture": "deployments.echo:EchoLLMBackend",  # benchmarks/ceiling.py's instant backend
    }
    default_backends = ("llama_cpp",)

    def in_background(self, request: LLMRequest) -> LLMRequest:
        return replace(request, background=True)

    def build_request(self, params: LLMParams, text: str, media: list[Output]) -> LLMRequest:
        prompt = llm_prompt(params.task, text, params.target_language, params.template)
        messages = ([ChatMessage("system", params.system)] if params.system else []) + [ChatMessage("user", prompt)]
        return LLMRequest(
            messages=messages,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=params.stop,
            seed=params.seed,
            response_format=params.response_format.to_request() if params.response_format else None,
        )

    def output(self, result: LLMResult) -> Output:
        return Output.of_text(result.text)

    # `n` choices are n generations: each reads the prompt and writes up to max_tokens.
    def requested_usage(self, request: LLMRequest) -> Usage:
        characters = sum(len(t) for t in texts_of(request))
        return Usage(characters=characters * request.n, output_tokens=request.max_tokens * request.n)

    def used(self, request: LLMRequest, result: LLMResult) -> Usage:
        # `completion_tokens` already sums the choices; the prompt was read once per choice.
        return Usage(prompt_tokens=result.prompt_tokens * request.n, output_tokens=result.completion_tokens)

    def payload_bound(self, request: LLMRequest) -> int:
        # UTF-8 takes at most 4 bytes a character; a token's text is a few characters. Images are
        # the only other payload a chat carries (to a backend with vision).
        images = sum(len(image) for m in request.messages or [] for image in m.images)
        tools = sum(len(str(t.parameters)) + len(t.description) for t in request.tools)
        return 4 * sum(len(t) for t in texts_of(request)) + images + 4 * tools + 64 * request.max_tokens * request.n


MODALITY = LLM()
