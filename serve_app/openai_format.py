"""What the OpenAI-compatible routes share: media checks, LLM requests from OpenAI's sampling
fields, answers that name their model, and OpenAI's streaming format."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jsonschema
from fastapi.responses import JSONResponse

from deployments import media
from deployments.types import InvalidInput, LLMChunk, LLMRequest, TokenLogprob, ToolCall
from modalities.llm import max_tokens_reason
from serve_app.errors import ApiError, http_error_of
from serve_app.platform import Platform
from serve_app.schemas import SamplingFields

DEFAULT_CHAT_MAX_TOKENS = 256
# Names the model (the backend's) that produced an answer, on every model route.
MODEL_HEADER = "x-labubu-model"
STARTED_AT = int(time.time())


def invalid_media(exc: InvalidInput, field: str) -> ApiError:
    return ApiError(400, "invalid_media", exc.message, [{"field": field, "reason": exc.message}])


def check_media(data: bytes, field: str, kind: str) -> bytes:
    """The media as the models take it: audio (`kind` "audio") as a 16-bit PCM WAV file, decoded
    from any format `media.to_wav` reads, a PNG or JPEG image as it is. A 415 for a format we do
    not take, a 400 for a malformed file of one we do. Decoding takes CPU: call it off the loop."""
    try:
        if kind == "audio":
            return media.to_wav(data)
        unsupported = media.unsupported_format(data, kind)
        if unsupported:
            raise media.UnsupportedMedia(f"{unsupported} is not supported; send image/png or image/jpeg")
        media.image_info(data)
        return data
    except media.UnsupportedMedia as exc:
        details = [{"field": field, "reason": exc.message}]
        raise ApiError(415, "unsupported_media_type", exc.message, details) from exc
    except InvalidInput as exc:
        raise invalid_media(exc, field) from exc


def invalid(field: str, reason: str, status: int = 400) -> ApiError:
    """A request the platform refuses, naming the field."""
    code = "invalid_input" if status == 400 else "validation_error"
    return ApiError(status, code, f"{field}: {reason}", [{"field": field, "reason": reason}])


def llm_request(body: SamplingFields, max_tokens: int, platform: Platform, **fields: Any) -> LLMRequest:
    """The LLM request of a chat or completion body; `fields` are the route's own (messages, tools, ...)."""
    reason = max_tokens_reason(max_tokens, platform.params_context)
    if reason:
        raise ApiError(422, "validation_error", f"max_tokens: {reason}", [{"field": "max_tokens", "reason": reason}])
    if body.stream and body.n > 1:
        raise invalid("n", "n > 1 is not streamed; ask without `stream`, or for one choice")
    return LLMRequest(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        n=body.n,
        **fields,
    )


def check_json_schema(schema: dict[str, Any], field: str) -> None:
    """A 400 naming `field` for a schema that is not JSON Schema (by its meta-schema)."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise invalid(field, f"not a valid JSON Schema: {exc.message}") from exc


# ---------------------------------------------------------------- images in messages

IMAGE_FETCH_TIMEOUT_S = 5.0
MAX_IMAGE_BYTES = 10 * 1024 * 1024


async def image_bytes(url: str, field: str) -> bytes:
    """The image of an `image_url` part: a data URL, or an http(s) URL fetched with a short timeout
    and a size cap; a 400 naming the field for anything else, 415 for a format we do not take."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise invalid(field, "a data URL must be base64 (data:image/png;base64,...)")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid(field, "the data URL is not valid base64") from exc
    elif url.startswith(("http://", "https://")):
        data = await fetch(url, field)
    else:
        raise invalid(field, "must be a data URL or an http(s) URL")
    check_media(data, field, "image")
    return data


async def fetch(url: str, field: str) -> bytes:
    """The bytes at a public http(s) URL. The ingress fetches on a client's behalf, so it never
    fetches from a private, loopback or link-local address (the cluster's own services, a cloud's
    metadata endpoint), nor follows redirects, which could lead there; errors say no more than
    that the fetch failed, so they map nothing behind the ingress."""
    await check_public(url, field)
    try:
        async with (
            httpx.AsyncClient(timeout=IMAGE_FETCH_TIMEOUT_S, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise invalid(field, "the image could not be fetched (not a 200 answer; redirects are not followed)")
            data = bytearray()
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > MAX_IMAGE_BYTES:
                    raise invalid(field, f"the image is over {MAX_IMAGE_BYTES} bytes")
            return bytes(data)
    except httpx.HTTPError as exc:
        raise invalid(field, "the image could not be fetched") from exc


async def check_public(url: str, field: str) -> None:
    """A 400 unless every address the URL's host resolves to is a public one."""
    parts = httpx.URL(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.host, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise invalid(field, "the image's host cannot be resolved") from exc
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    if not addresses or not all(address.is_global for address in addresses):
        raise invalid(field, "the image URL must point to a public address")


# ---------------------------------------------------------------- answers


def tool_calls_body(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def logprobs_body(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """OpenAI's `choices[].logprobs` of a chat answer."""
    if logprobs is None:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {**entry(t.token, t.logprob), "top_logprobs": [entry(tok, lp) for tok, lp in t.top_logprobs]}
            for t in logprobs
        ],
        "refusal": None,
    }


ARGUMENT_PIECE = 16  # characters of a streamed tool call's arguments per delta, as OpenAI streams them


def tool_call_deltas(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """A whole tool call as OpenAI streams one: a delta with its index, id, type and name, then
    the arguments in pieces."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append(head)
        for start in range(0, len(call.arguments), ARGUMENT_PIECE):
            piece = call.arguments[start : start + ARGUMENT_PIECE]
            deltas.append({"index": index, "function": {"arguments": piece}})
    return deltas


def answered_by(model: str, body: dict[str, Any]) -> JSONResponse:
    """A model call's JSON answer, naming the model that produced it in a header as well (where the
    body has no `model` field of OpenAI's, the header is the only place: speech, for one)."""
    return JSONResponse(body, headers={MODEL_HEADER: model})


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
    make_chunks: Callable[[LLMChunk], list[dict[str, Any]]],
    include_usage: bool,
    usage_chunk: Callable[[LLMChunk], dict[str, Any]],
) -> AsyncIterator[str]:
    """SSE lines in OpenAI's streaming format, ending with `data: [DONE]`; `make_chunks` gives the
    events of one engine chunk (a tool call is several)."""
    last = first
    try:
        if first is not None:
            for event in make_chunks(first):
                yield sse(event)
        async for chunk in rest:
            last = chunk
            for event in make_chunks(chunk):
                yield sse(event)
    except Exception as exc:  # after the first byte the status is sent: report in the stream
        error = http_error_of(exc) or ApiError(500, "internal_error", "the stream failed")
        yield sse({"error": {"code": error.code, "message": error.message, "details": error.details}})
        return
    if include_usage and last is not None:
        yield sse(usage_chunk(last))
    yield "data: [DONE]\n\n"
