"""`POST /v1/completions` (OpenAI's legacy text completions, streamed or not)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from deployments.types import LLMChunk, LLMRequest, LLMResult
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError
from serve_app.openai_format import MODEL_HEADER, answered_by, first_and_rest, llm_request, openai_stream, usage
from serve_app.platform import Platform
from serve_app.schemas import CompletionRequest

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


def prompt_of(body: CompletionRequest) -> str:
    return body.prompt if isinstance(body.prompt, str) else body.prompt[0]


async def prepare_completion(body: CompletionRequest, platform: Platform) -> LLMRequest:
    """The LLM request of a completion body, every check of the route done: shared by the route
    and batch lines."""
    await platform.resolve_model(body.model, ("llm",))
    prompt = prompt_of(body)
    if not prompt.strip():
        raise ApiError(400, "invalid_input", "the prompt is empty", [{"field": "prompt", "reason": "empty"}])
    # `logprobs` (any number, 0 included) asks for them: the failover chain refuses it, naming the
    # field, when no backend gives them. `echo` puts the prompt before each text.
    return llm_request(
        body,
        body.max_tokens,
        platform,
        prompt=prompt,
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
    )


def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def completion_body(body: CompletionRequest, result: LLMResult, completion_id: str, created: int) -> dict[str, Any]:
    """OpenAI's `text_completion` of a result."""
    echoed = prompt_of(body) if body.echo else ""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": result.model,
        "choices": [choice(index, echoed + c.text, c.finish_reason) for index, c in enumerate(result.choices())],
        "usage": usage(result.prompt_tokens, result.completion_tokens),
    }


@router.post("/completions", summary="Text completion (OpenAI format)")
async def completions(
    body: CompletionRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    request = await prepare_completion(body, platform)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        result: LLMResult = await platform.call("llm", request, principal)
        return answered_by(result.model, completion_body(body, result, completion_id, created))

    echoed = prompt_of(body) if body.echo else ""

    def chunk_body(chunk: LLMChunk) -> list[dict[str, Any]]:
        nonlocal echoed
        text, echoed = echoed + chunk.text, ""
        return [
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": chunk.model,
                "choices": [choice(0, text, chunk.finish_reason)],
            }
        ]

    def usage_body(last: LLMChunk) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": last.model,
            "choices": [],
            "usage": usage(last.prompt_tokens or 0, last.completion_tokens or 0),
        }

    first, rest = await first_and_rest(platform.stream("llm", request, principal))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        openai_stream(first, rest, chunk_body, include_usage, usage_body),
        media_type="text/event-stream",
        headers={MODEL_HEADER: first.model} if first is not None else None,
    )
