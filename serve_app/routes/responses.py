"""`/v1/responses`: OpenAI's Responses API over the chat models, streamed or not, stored per tenant.

A response is a chat completion of its conversation (see `serve_app.responses`); a stream is the
Responses' typed events, each with its `sequence_number`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response, StreamingResponse

from deployments.types import LLMChunk, LLMResult, ToolCall
from serve_app import responses
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError, http_error_of
from serve_app.openai_format import ARGUMENT_PIECE, MODEL_HEADER, answered_by, first_and_rest
from serve_app.platform import Platform
from serve_app.responses import ResponseCreateRequest, new_id

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

ResponseIdPath = Annotated[str, Path(max_length=80)]


@router.post("/responses", summary="Create a model response (OpenAI's Responses API)")
async def create_response(
    body: ResponseCreateRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    request, items = await responses.prepare_response(body, platform, principal)
    response_id = new_id("resp")
    created_at = int(time.time())
    if not body.stream:
        result: LLMResult = await platform.call("llm", request, principal)
        answer = responses.completed_response(body, response_id, created_at, result)
        if body.store:
            await responses.save(platform, principal.tenant, answer, items)
        return answered_by(result.model, answer)

    first, rest = await first_and_rest(platform.stream("llm", request, principal))
    model = first.model if first is not None else ""
    events = ResponseEvents(body, response_id, created_at, model)

    async def stream() -> AsyncIterator[str]:
        for line in events.start():
            yield line
        try:
            chunks = rest
            if first is not None:
                for line in events.chunk(first):
                    yield line
            async for chunk in chunks:
                for line in events.chunk(chunk):
                    yield line
        except Exception as exc:  # the status is sent: report in the stream
            error = http_error_of(exc) or ApiError(500, "internal_error", "the stream failed")
            yield events.event("error", code=error.code, message=error.message, param=None)
            return
        answer = events.completed()
        if body.store:
            await responses.save(platform, principal.tenant, answer, items)
        yield events.event("response.completed", response=answer)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={MODEL_HEADER: model} if model else None)


class ResponseEvents:
    """The typed events of one streamed response, numbered in order: the message's text as it
    comes, each function call (whole from the engine) as an item with its arguments in pieces."""

    def __init__(self, body: ResponseCreateRequest, response_id: str, created_at: int, model: str) -> None:
        self.body = body
        self.response_id = response_id
        self.created_at = created_at
        self.model = model
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the message item being written
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"

    def _response(self) -> dict[str, Any]:
        return responses.response_object(
            self.body, self.response_id, self.created_at, self.model, self.output, self.finish_reason, self.usage
        )

    def start(self) -> list[str]:
        return [
            self.event("response.created", response=self._response()),
            self.event("response.in_progress", response=self._response()),
        ]

    def chunk(self, chunk: LLMChunk) -> list[str]:
        lines: list[str] = []
        if chunk.text:
            lines += self._open_message()
            assert self.message is not None
            self.message["content"][0]["text"] += chunk.text
            lines.append(self._in_message("response.output_text.delta", delta=chunk.text, logprobs=[]))
        for call in chunk.tool_calls:
            lines += self._close_message()
            lines += self._function_call(call)
        if chunk.finish_reason is not None:
            if not self.output:  # no text and no call: still one (empty) message, as the answer is
                lines += self._open_message()
            lines += self._close_message()
            self.finish_reason = chunk.finish_reason
            self.usage = responses.usage_body(chunk.prompt_tokens or 0, chunk.completion_tokens or 0)
        return lines

    def completed(self) -> dict[str, Any]:
        self.finish_reason = self.finish_reason or "stop"
        return self._response()

    def _in_message(self, kind: str, **fields: Any) -> str:
        assert self.message is not None
        return self.event(
            kind, item_id=self.message["id"], output_index=len(self.output) - 1, content_index=0, **fields
        )

    def _open_message(self) -> list[str]:
        if self.message is not None:
            return []
        self.message = {
            "id": new_id("msg"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        self.output.append(self.message)
        added = self.event("response.output_item.added", output_index=len(self.output) - 1, item=dict(self.message))
        part = {"type": "output_text", "text": "", "annotations": []}
        self.message["content"].append(part)
        return [added, self._in_message("response.content_part.added", part=dict(part))]

    def _close_message(self) -> list[str]:
        if self.message is None:
            return []
        part = self.message["content"][0]
        self.message["status"] = "completed"
        lines = [
            self._in_message("response.output_text.done", text=part["text"], logprobs=[]),
            self._in_message("response.content_part.done", part=part),
            self.event("response.output_item.done", output_index=len(self.output) - 1, item=self.message),
        ]
        self.message = None
        return lines

    def _function_call(self, call: ToolCall) -> list[str]:
        item = {
            "id": new_id("fc"),
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": "",
            "status": "in_progress",
        }
        self.output.append(item)
        index = len(self.output) - 1
        lines = [self.event("response.output_item.added", output_index=index, item=dict(item))]
        for start in range(0, len(call.arguments), ARGUMENT_PIECE):
            piece = call.arguments[start : start + ARGUMENT_PIECE]
            lines.append(
                self.event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece
                )
            )
        item.update(arguments=call.arguments, status="completed")
        lines.append(
            self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=call.arguments,
                name=call.name,
            )
        )
        lines.append(self.event("response.output_item.done", output_index=index, item=item))
        return lines


@router.get("/responses/{response_id}", summary="A stored response")
async def get_response(
    response_id: ResponseIdPath,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    document = await responses.load(platform, principal.tenant, response_id)
    answer: dict[str, Any] = document["response"]
    return answer


@router.delete("/responses/{response_id}", summary="Delete a stored response")
async def delete_response(
    response_id: ResponseIdPath,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    await responses.load(platform, principal.tenant, response_id)
    key = responses.store_key(principal.tenant, response_id)
    await asyncio.to_thread(platform.store.delete, responses.RESPONSES, key)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/responses/{response_id}/input_items", summary="The items of a stored response's conversation")
async def list_input_items(
    response_id: ResponseIdPath,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=80)] = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    """Every item the response answered: the previous responses' inputs and outputs, then its own input."""
    document = await responses.load(platform, principal.tenant, response_id)
    items: list[dict[str, Any]] = document["input_items"]
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
