"""Google Gemini through the google-genai SDK: text (`llm`), vision captions (`pic2text`) and images (`text2pic`).

The three backends share `GeminiBackend`: one SDK client per backend, an API key, an optional
`base_url` for a Gemini-compatible endpoint (the tests' fake server), and one mapping from the
SDK's failures to the platform's errors. The key is the `api_key` argument when code builds a
backend; on the platform, where backend options are Serve app args that Serve shows and stores in
clear, it is `GEMINI_API_KEY` or `GOOGLE_API_KEY` in the replica's environment, which the SDK reads
itself (GOOGLE_API_KEY first, as google-genai does). The mapping:

- 400 and other client errors → `InvalidInput` (another backend would refuse it too), 413 → `InputTooLarge`
- 401/403 (key rejected) and 404 (no such model) → `ModelUnavailable`
- 429, 5xx, connection errors → `BackendFailure`; timeouts → `BackendTimeout` (all retryable)

The SDK's own retries are off: the failover chain decides where the next attempt goes.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any, cast

from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from deployments.llm import check_request, new_call_id, run_choices
from deployments.media import PNG_MAGIC, image_info, load_image, png_bytes
from deployments.pic2text import check_caption_request, each_image
from deployments.text2pic import check_image_request
from deployments.types import (
    JSON_OBJECT,
    JSON_SCHEMA,
    STREAMING,
    TOOLS,
    VISION,
    BackendFailure,
    BackendTimeout,
    CaptionRequest,
    CaptionResult,
    ImageRequest,
    ImageResult,
    InputTooLarge,
    InvalidInput,
    LLMChunk,
    LLMRequest,
    LLMResult,
    ModelError,
    ModelUnavailable,
    ToolCall,
)

log = logging.getLogger(__name__)

DEFAULT_CAPTION_PROMPT = "Describe this image in one short sentence."
# The aspect ratios Gemini's image models make; a request gets the one nearest its width/height.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# Finish reasons that mean the answer was withheld, in the OpenAI vocabulary the API speaks.
FILTERED = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
}


def _optional_classes(*names: str) -> tuple[type[Exception], ...]:
    """Exception classes ("module:Class") of the HTTP clients the SDK may use, those installed."""
    classes = []
    for name in names:
        module_name, class_name = name.split(":")
        try:
            classes.append(getattr(importlib.import_module(module_name), class_name))
        except ImportError:
            continue
    return tuple(classes)


# The SDK's async calls go through aiohttp when it is installed, else through httpx (or httpx2).
TIMEOUT_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    *_optional_classes("httpx:TimeoutException", "httpx2:TimeoutException"),
)
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    *_optional_classes("aiohttp:ClientError", "httpx:TransportError", "httpx2:TransportError"),
)


def model_error(exc: Exception, model: str) -> Exception:
    """The platform's error for an exception from the SDK or its HTTP client (unknown ones as they are)."""
    if isinstance(exc, genai_errors.APIError):
        message = f"Gemini ({model}) answered {exc.code} {exc.status or ''}: {exc.message or exc}"
        if exc.code in (401, 403):
            return ModelUnavailable(f"{message} (is the API key valid?)")
        if exc.code == 404:
            return ModelUnavailable(f"{message} (is the model name right?)")
        if exc.code == 413:
            return InputTooLarge(message)
        if exc.code == 429 or exc.code >= 500:
            return BackendFailure(message)
        return InvalidInput(message)
    if isinstance(exc, TIMEOUT_ERRORS):
        return BackendTimeout(f"Gemini ({model}) did not answer in time")
    if isinstance(exc, TRANSPORT_ERRORS):
        return BackendFailure(f"Gemini ({model}) cannot be reached: {type(exc).__name__}: {exc}")
    return exc


def finish_reason(candidate: genai_types.Candidate | None) -> str | None:
    reason = candidate.finish_reason if candidate else None
    if reason is None:
        return None
    name = str(getattr(reason, "value", reason))
    if name == "STOP":
        return "stop"
    if name == "MAX_TOKENS":
        return "length"
    return "content_filter" if name in FILTERED else name.lower()


def first_candidate(response: genai_types.GenerateContentResponse) -> genai_types.Candidate | None:
    """The answer's first candidate; a prompt Gemini refused outright is the client's `InvalidInput`."""
    if response.candidates:
        return response.candidates[0]
    feedback = response.prompt_feedback
    if feedback and feedback.block_reason:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise InvalidInput(f"Gemini refused the prompt ({reason}): {feedback.block_reason_message or ''}".strip())
    return None


def answer_calls(candidate: genai_types.Candidate | None) -> list[ToolCall]:
    """The candidate's function calls, as OpenAI tool calls."""
    if candidate is None or candidate.content is None:
        return []
    return [
        ToolCall(
            part.function_call.id or new_call_id(),
            part.function_call.name or "",
            json.dumps(part.function_call.args or {}),
        )
        for part in candidate.content.parts or []
        if part.function_call is not None
    ]


def answer_text(candidate: genai_types.Candidate | None) -> str:
    """The candidate's text, without the model's thoughts."""
    if candidate is None or candidate.content is None:
        return ""
    return "".join(part.text for part in candidate.content.parts or [] if part.text and not part.thought)


def token_counts(usage: genai_types.GenerateContentResponseUsageMetadata | None) -> tuple[int, int]:
    """Prompt and completion tokens; thinking tokens count as completion, as Google bills them."""
    if usage is None:
        return 0, 0
    return usage.prompt_token_count or 0, (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The aspect ratio Gemini offers that is nearest to width:height (compared as logarithms)."""
    wanted = math.log(max(width, 1) / max(height, 1))

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - wanted)

    return min(ASPECT_RATIOS, key=distance)


class GeminiBackend:
    """What the Gemini backends share: the SDK client, its endpoint and timeout, and error mapping.

    Each subclass names its `default_model`, used when the config gives no `model`.

    `thinking_budget` caps the tokens a thinking model (2.5 Flash, Pro) spends before it answers;
    None leaves the model's default, 0 turns thinking off where the model allows it.
    """

    name = "gemini"
    default_model: str

    def __init__(
        self,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        api_version: str = "v1beta",
        thinking_budget: int | None = None,
    ) -> None:
        self.model = model or self.default_model
        self.api_key = api_key
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.api_version = api_version
        self.thinking_budget = thinking_budget
        self._client: genai.Client | None = None

    def load(self) -> None:
        try:
            self._client = genai.Client(
                api_key=self.api_key,  # None: the SDK reads GOOGLE_API_KEY, then GEMINI_API_KEY
                vertexai=False,
                http_options=genai_types.HttpOptions(
                    base_url=self.base_url,
                    api_version=self.api_version,
                    timeout=int(self.timeout_s * 1000),  # milliseconds
                    retry_options=genai_types.HttpRetryOptions(attempts=1),
                ),
            )
        except ValueError as exc:  # the SDK's answer when it finds no key
            raise ModelUnavailable(
                "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment of every Ray "
                f"node, e.g. from a Kubernetes Secret; get a key at Google AI Studio ({exc})"
            ) from exc

    @property
    def client(self) -> genai.Client:
        if self._client is None:
            raise ModelUnavailable(f"the {self.name} backend ({self.model}) is not loaded")
        return self._client

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Raise the SDK's failures inside the block as the platform's errors."""
        try:
            yield
        except ModelError:
            raise
        except Exception as exc:
            error = model_error(exc, self.model)
            if error is exc:
                raise
            raise error from exc

    def config(self, **options: Any) -> genai_types.GenerateContentConfig:
        if self.thinking_budget is not None:
            options["thinking_config"] = genai_types.ThinkingConfig(thinking_budget=self.thinking_budget)
        return genai_types.GenerateContentConfig(**options)

    async def generate(
        self, contents: list[genai_types.Content], config: genai_types.GenerateContentConfig
    ) -> genai_types.GenerateContentResponse:
        with self.errors():
            return await self.client.aio.models.generate_content(model=self.model, contents=contents, config=config)


class GeminiTextBackend(GeminiBackend):
    """Chat and completion with a Gemini model; system messages become the system instruction.

    Tools are Gemini's function declarations (their JSON Schemas as they are), `tool_choice` its
    function calling mode (auto AUTO, required ANY, a named function ANY with that name allowed,
    none NONE; `parallel_tool_calls: false` keeps the first call); `response_format` is
    `response_json_schema` with the JSON MIME type; images are inline parts. The history's tool
    calls and results are function call and response parts.
    """

    default_model = "gemini-2.5-flash"
    capabilities = frozenset({TOOLS, JSON_SCHEMA, JSON_OBJECT, VISION, STREAMING})

    def _prepare(self, request: LLMRequest) -> tuple[list[genai_types.Content], genai_types.GenerateContentConfig]:
        check_request(request)
        system: list[str] = []
        contents: list[genai_types.Content] = []
        if request.messages is None:
            contents.append(genai_types.Content(role="user", parts=[genai_types.Part(text=request.prompt or "")]))
        for message in request.messages or []:
            if message.role == "system":
                system.append(message.content)
                continue
            parts: list[genai_types.Part] = []
            if message.role == "tool":
                response = {"result": message.content}
                call = genai_types.FunctionResponse(id=message.tool_call_id, name=message.name or "", response=response)
                parts.append(genai_types.Part(function_response=call))
            else:
                if message.content:
                    parts.append(genai_types.Part(text=message.content))
                parts += [
                    genai_types.Part.from_bytes(data=image, mime_type=image_info(image).content_type)
                    for image in message.images
                ]
                parts += [
                    genai_types.Part(
                        function_call=genai_types.FunctionCall(
                            id=c.id, name=c.name, args=json.loads(c.arguments or "{}")
                        )
                    )
                    for c in message.tool_calls
                ]
            role = "model" if message.role == "assistant" else "user"
            contents.append(genai_types.Content(role=role, parts=parts or [genai_types.Part(text="")]))
        if not contents:
            raise InvalidInput("the messages have no user turn, only system messages")
        options: dict[str, Any] = {}
        if request.uses_tools():
            declarations = [
                genai_types.FunctionDeclaration(
                    name=t.name, description=t.description, parameters_json_schema=t.parameters
                )
                for t in request.tools
            ]
            options["tools"] = [genai_types.Tool(function_declarations=declarations)]
            named = request.tool_choice not in ("auto", "required")
            mode = "AUTO" if request.tool_choice == "auto" else "ANY"
            calling = genai_types.FunctionCallingConfig(
                mode=genai_types.FunctionCallingConfigMode(mode),
                allowed_function_names=[request.tool_choice] if named else None,
            )
            options["tool_config"] = genai_types.ToolConfig(function_calling_config=calling)
        form = request.response_format
        if form is not None and form.type in (JSON_SCHEMA, JSON_OBJECT):
            options["response_mime_type"] = "application/json"
            if form.type == JSON_SCHEMA:
                options["response_json_schema"] = form.schema
        config = self.config(
            system_instruction="\n\n".join(system) or None,
            max_output_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop_sequences=list(request.stop) or None,
            seed=request.seed,
            presence_penalty=request.presence_penalty or None,
            frequency_penalty=request.frequency_penalty or None,
            **options,
        )
        return contents, config

    async def run(self, request: LLMRequest) -> LLMResult:
        return await run_choices(request, self._run_one)

    async def _run_one(self, request: LLMRequest) -> LLMResult:
        contents, config = self._prepare(request)
        response = await self.generate(contents, config)
        candidate = first_candidate(response)
        prompt_tokens, completion_tokens = token_counts(response.usage_metadata)
        calls = answer_calls(candidate)[: None if request.parallel_tool_calls else 1]
        return LLMResult(
            text=answer_text(candidate),
            finish_reason="tool_calls" if calls else finish_reason(candidate) or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=self.model,
            tool_calls=calls,
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        if request.n > 1:
            raise InvalidInput("n > 1 is not streamed", [{"field": "n", "reason": "n > 1 is not streamed"}])
        contents, config = self._prepare(request)
        reason: str | None = None
        usage: genai_types.GenerateContentResponseUsageMetadata | None = None
        calls: list[ToolCall] = []
        with self.errors():
            responses = await self.client.aio.models.generate_content_stream(
                model=self.model, contents=contents, config=config
            )
            # Closed on every exit, so a client that goes away mid-stream releases the connection at once.
            async with aclosing(cast("AsyncGenerator[genai_types.GenerateContentResponse, None]", responses)):
                async for response in responses:
                    # Every event carries the usage so far; the last one has the totals.
                    usage = response.usage_metadata or usage
                    candidate = first_candidate(response)
                    reason = finish_reason(candidate) or reason
                    calls += answer_calls(candidate)
                    text = answer_text(candidate)
                    if text:
                        yield LLMChunk(text=text)
        prompt_tokens, completion_tokens = token_counts(usage)
        calls = calls[: None if request.parallel_tool_calls else 1]  # Gemini has no switch for it
        yield LLMChunk(
            text="",
            finish_reason="tool_calls" if calls else reason or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tool_calls=calls,
        )


class GeminiCaptionBackend(GeminiBackend):
    """Image captions from Gemini vision: one call per image (concurrently), captions joined by newlines."""

    default_model = "gemini-2.5-flash"

    async def run(self, request: CaptionRequest) -> CaptionResult:
        check_caption_request(request)
        infos = each_image(request.images, image_info)
        prompt = request.prompt.strip() or DEFAULT_CAPTION_PROMPT
        config = self.config(max_output_tokens=request.max_tokens)
        calls = [
            self.generate(
                [
                    genai_types.Content(
                        role="user",
                        parts=[
                            genai_types.Part.from_bytes(data=data, mime_type=info.content_type),
                            genai_types.Part(text=prompt),
                        ],
                    )
                ],
                config,
            )
            for data, info in zip(request.images, infos, strict=True)
        ]
        responses = await asyncio.gather(*calls)
        captions = [answer_text(first_candidate(response)).strip() for response in responses]
        return CaptionResult(text="\n".join(captions), model=self.model)


class GeminiImageBackend(GeminiBackend):
    """Images from Gemini's image model: one call per image, the nearest aspect ratio, PNG out.

    Gemini picks the pixel size from the aspect ratio, so the result's width and height are the
    images' own. It has no notion of steps: the result reports the requested steps, so that the
    fair-share cost charged at release is the one estimated at admission. A negative prompt is
    passed as an instruction in the prompt, since the API has no field for it.
    """

    default_model = "gemini-2.5-flash-image"

    async def run(self, request: ImageRequest) -> ImageResult:
        check_image_request(request)
        prompt = request.prompt.strip()
        if request.negative_prompt:
            prompt += f"\n\nDo not show: {request.negative_prompt}"
        contents = [genai_types.Content(role="user", parts=[genai_types.Part(text=prompt)])]
        aspect_ratio = nearest_aspect_ratio(request.width, request.height)

        def config(index: int) -> genai_types.GenerateContentConfig:
            return self.config(
                response_modalities=["IMAGE"],
                image_config=genai_types.ImageConfig(aspect_ratio=aspect_ratio),
                seed=None if request.seed is None else request.seed + index,
            )

        responses = await asyncio.gather(*(self.generate(contents, config(i)) for i in range(request.n)))
        images = [self._png(response) for response in responses]
        info = image_info(images[0])
        return ImageResult(images=images, width=info.width, height=info.height, steps=request.steps, model=self.model)

    def _png(self, response: genai_types.GenerateContentResponse) -> bytes:
        """The answer's image as PNG bytes (Gemini may answer in another format)."""
        candidate = first_candidate(response)
        parts = candidate.content.parts if candidate and candidate.content else None
        for part in parts or []:
            blob = part.inline_data
            if blob is None or not blob.data or not (blob.mime_type or "").startswith("image/"):
                continue
            try:
                if blob.data.startswith(PNG_MAGIC):
                    image_info(blob.data)
                    return blob.data
                return png_bytes(load_image(blob.data))
            except InvalidInput as exc:  # Gemini's image, not the client's: a backend failure
                raise BackendFailure(f"Gemini ({self.model}) answered an unreadable image: {exc.message}") from exc
        if finish_reason(candidate) == "content_filter":
            raise InvalidInput(f"Gemini ({self.model}) withheld the image for safety or policy reasons")
        text = answer_text(candidate)
        raise BackendFailure(f"Gemini ({self.model}) answered no image" + (f": {text}" if text else ""))
