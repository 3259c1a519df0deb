"""The interactive, OpenAI-compatible endpoints: one model call each."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from deployments import media
from deployments.types import (
    SERVICES,
    CaptionRequest,
    ChatMessage,
    EmbedRequest,
    EmbedResult,
    ImageRequest,
    InvalidInput,
    LLMChunk,
    LLMRequest,
    LLMResult,
    SpeechRequest,
    TranscribeRequest,
)
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError, api_error_of
from serve_app.platform import Platform
from serve_app.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequestIn,
    ImageGenerationRequest,
    SamplingFields,
    SpeechRequestIn,
)

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

DEFAULT_CHAT_MAX_TOKENS = 256
STARTED_AT = int(time.time())


def invalid_media(exc: InvalidInput, field: str) -> ApiError:
    return ApiError(400, "invalid_media", exc.message, [{"field": field, "reason": exc.message}])


def check_media(data: bytes, field: str, kind: str) -> None:
    """A 415 for a format we do not take, a 400 for a malformed file of one we do."""
    unsupported = media.unsupported_format(data)
    if unsupported:
        accepted = "audio/wav" if kind == "audio" else "image/png or image/jpeg"
        raise ApiError(415, "unsupported_media_type", f"{unsupported} is not supported; send {accepted}")
    try:
        media.wav_info(data) if kind == "audio" else media.image_info(data)
    except InvalidInput as exc:
        raise invalid_media(exc, field) from exc


def llm_request(body: SamplingFields, max_tokens: int, platform: Platform, **text: Any) -> LLMRequest:
    limit = platform.settings.llm_max_tokens
    if max_tokens > limit:
        reason = f"must be at most {limit}, the model's limit"
        raise ApiError(422, "validation_error", f"max_tokens: {reason}", [{"field": "max_tokens", "reason": reason}])
    return LLMRequest(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
        **text,
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(data: Any) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def first_and_rest(chunks: AsyncIterator[LLMChunk]) -> tuple[LLMChunk | None, AsyncIterator[LLMChunk]]:
    """Wait for the first chunk, so that an error before any output is still a proper HTTP error."""
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        return None, chunks
    return first, chunks


async def openai_stream(
    first: LLMChunk | None,
    rest: AsyncIterator[LLMChunk],
    make_chunk: Any,
    include_usage: bool,
    usage_chunk: Any,
) -> AsyncIterator[str]:
    """SSE lines in OpenAI's streaming format, ending with `data: [DONE]`."""
    last = first
    try:
        if first is not None:
            yield sse(make_chunk(first))
        async for chunk in rest:
            last = chunk
            yield sse(make_chunk(chunk))
    except Exception as exc:  # after the first byte the status is sent: report in the stream
        error = api_error_of(exc) or ApiError(500, "internal_error", "the stream failed")
        yield sse({"error": {"code": error.code, "message": error.message, "details": error.details}})
        return
    if include_usage and last is not None:
        yield sse(usage_chunk(last))
    yield "data: [DONE]\n\n"


@router.post("/chat/completions", summary="Chat completion (OpenAI format)")
async def chat_completions(
    body: ChatCompletionRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(body.model, ("llm",))
    messages = [
        ChatMessage(
            role="system" if m.role == "developer" else "user" if m.role == "tool" else m.role, content=m.text()
        )
        for m in body.messages
    ]
    if not any(m.content.strip() for m in messages):
        raise ApiError(400, "invalid_input", "the messages are empty", [{"field": "messages", "reason": "empty"}])
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_CHAT_MAX_TOKENS
    request = llm_request(body, max_tokens, platform, messages=messages)
    model = await platform.serving_model("llm")
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    if not body.stream:
        result: LLMResult = await platform.call("llm", request, principal)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": usage(result.prompt_tokens, result.completion_tokens),
            }
        )

    first_delta = True

    def chunk_body(chunk: LLMChunk) -> dict[str, Any]:
        nonlocal first_delta
        delta: dict[str, Any] = {"content": chunk.text} if chunk.text or not chunk.finish_reason else {}
        if first_delta:
            delta["role"] = "assistant"
            first_delta = False
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": chunk.finish_reason}],
        }

    def usage_body(last: LLMChunk) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage(last.prompt_tokens or 0, last.completion_tokens or 0),
        }

    first, rest = await first_and_rest(platform.stream("llm", request, principal))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        openai_stream(first, rest, chunk_body, include_usage, usage_body), media_type="text/event-stream"
    )


@router.post("/completions", summary="Text completion (OpenAI format)")
async def completions(
    body: CompletionRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(body.model, ("llm",))
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    if not prompt.strip():
        raise ApiError(400, "invalid_input", "the prompt is empty", [{"field": "prompt", "reason": "empty"}])
    request = llm_request(body, body.max_tokens, platform, prompt=prompt)
    model = await platform.serving_model("llm")
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def choice(text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    if not body.stream:
        result: LLMResult = await platform.call("llm", request, principal)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice(result.text, result.finish_reason)],
                "usage": usage(result.prompt_tokens, result.completion_tokens),
            }
        )

    def chunk_body(chunk: LLMChunk) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice(chunk.text, chunk.finish_reason)],
        }

    def usage_body(last: LLMChunk) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage(last.prompt_tokens or 0, last.completion_tokens or 0),
        }

    first, rest = await first_and_rest(platform.stream("llm", request, principal))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        openai_stream(first, rest, chunk_body, include_usage, usage_body), media_type="text/event-stream"
    )


@router.post("/audio/transcriptions", summary="Speech to text (OpenAI format, WAV input)")
async def transcriptions(
    file: UploadFile = File(..., description="A WAV file, 16-bit PCM"),
    model: str = Form("stt"),
    language: str | None = Form(None),
    response_format: str = Form("json"),
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(model, ("stt",))
    if response_format not in ("json", "text", "verbose_json"):
        reason = "must be json, text or verbose_json"
        raise ApiError(
            422, "validation_error", f"response_format: {reason}", [{"field": "response_format", "reason": reason}]
        )
    audio = await file.read()
    check_media(audio, "file", "audio")
    result = await platform.call("stt", TranscribeRequest(audio=audio, language=language or None), principal)
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format == "verbose_json":
        return JSONResponse(
            {"task": "transcribe", "language": result.language, "duration": result.audio_seconds, "text": result.text}
        )
    return JSONResponse({"text": result.text})


@router.post("/audio/speech", summary="Text to speech (OpenAI format, WAV output)")
async def speech(
    body: SpeechRequestIn,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(body.model, ("tts",))
    if not body.input.strip():
        raise ApiError(400, "invalid_input", "the input text is empty", [{"field": "input", "reason": "empty"}])
    result = await platform.call("tts", SpeechRequest(text=body.input, voice=body.voice, speed=body.speed), principal)
    return Response(content=result.wav, media_type="audio/wav")


@router.post("/images/generations", summary="Text to image (OpenAI format, base64 PNGs)")
async def image_generations(
    body: ImageGenerationRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(body.model, ("text2pic",))
    if not body.prompt.strip():
        raise ApiError(400, "invalid_input", "the prompt is empty", [{"field": "prompt", "reason": "empty"}])
    width, height = body.dimensions()
    options: dict[str, Any] = {"steps": body.steps} if body.steps else {}
    request = ImageRequest(prompt=body.prompt, width=width, height=height, n=body.n, seed=body.seed, **options)
    result = await platform.call("text2pic", request, principal)
    return JSONResponse(
        {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(png).decode()} for png in result.images],
            "size": f"{result.width}x{result.height}",
        }
    )


@router.post("/images/captions", summary="Image to text (one or more PNG or JPEG files)")
async def image_captions(
    file: list[UploadFile] = File(..., description="One or more PNG or JPEG images"),
    prompt: str = Form(""),
    model: str = Form("pic2text"),
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(model, ("pic2text",))
    images = [await upload.read() for upload in file]
    for index, image in enumerate(images):
        check_media(image, f"file.{index}", "image")
    result = await platform.call("pic2text", CaptionRequest(images=images, prompt=prompt), principal)
    return JSONResponse({"text": result.text})


@router.post("/embeddings", summary="Text embeddings (OpenAI format)")
async def embeddings(
    body: EmbeddingRequestIn,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(body.model, ("embed",))
    texts = body.texts()
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        field = "input" if isinstance(body.input, str) else f"input.{empty[0]}"
        raise ApiError(400, "invalid_input", "an input text is empty", [{"field": field, "reason": "empty"}])
    result: EmbedResult = await platform.call("embed", EmbedRequest(texts=texts), principal)
    dimension = len(result.vectors[0])
    if body.dimensions is not None and body.dimensions != dimension:
        reason = f"{result.model} makes vectors of {dimension} dimensions"
        raise ApiError(422, "validation_error", f"dimensions: {reason}", [{"field": "dimensions", "reason": reason}])

    def encode(vector: list[float]) -> list[float] | str:
        # OpenAI's base64 is the little-endian float32 array; its client asks for it by default.
        if body.encoding_format == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(vector)}
                for i, vector in enumerate(result.vectors)
            ],
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )


@router.get("/models", summary="The served models (OpenAI format)")
async def models(
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    data: list[dict[str, Any]] = []
    statuses = await platform.all_status()
    for service in SERVICES:
        status = statuses[service]
        backends = status.get("backends", [])
        serving = next((b for b in backends if b.get("ready")), None)
        data.append(
            {
                "id": service,
                "object": "model",
                "created": STARTED_AT,
                "owned_by": "labubu",
                "service": service,
                "ready": bool(status.get("ready")),
                "backend": serving["name"] if serving else None,
                "model": serving["model"] if serving else None,
                "backends": [{k: b[k] for k in ("name", "model", "ready", "reason")} for b in backends],
            }
        )
        for backend in backends:
            data.append(
                {
                    "id": backend["model"],
                    "object": "model",
                    "created": STARTED_AT,
                    "owned_by": backend["name"],
                    "service": service,
                    "backend": backend["name"],
                    "ready": backend["ready"],
                    "voices": backend.get("voices", []),
                }
            )
    return JSONResponse({"object": "list", "data": data})
