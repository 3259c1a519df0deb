"""`POST /v1/chat/completions` (OpenAI's chat format, streamed or not).

What the route adds to the engines: the tools' and schemas' check (a schema that is not JSON
Schema is a 400 naming it), the history's tool calls and results, and images: to a backend that
sees them when the one that would serve does, else captioned by `pic2text` (a model call of its
own, admitted and charged) and given to the LLM as `[image: <caption>]`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from deployments.types import (
    VISION,
    CaptionRequest,
    CaptionResult,
    ChatMessage,
    LLMChunk,
    LLMRequest,
    LLMResult,
    ToolCall,
    ToolSpec,
)
from serve_app import avatars
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES
from serve_app.openai_format import (
    DEFAULT_CHAT_MAX_TOKENS,
    MODEL_HEADER,
    answered_by,
    check_json_schema,
    first_and_rest,
    image_bytes,
    invalid,
    llm_request,
    logprobs_body,
    openai_stream,
    tool_call_deltas,
    tool_calls_body,
    usage,
)
from serve_app.platform import Platform
from serve_app.schemas import ChatCompletionRequest, ChatMessageIn

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def tool_specs(body: ChatCompletionRequest) -> list[ToolSpec]:
    """The request's tools, each schema checked; `tool_choice` must name one of them."""
    specs: list[ToolSpec] = []
    for index, tool in enumerate(body.tools or []):
        function = tool.function
        parameters = function.parameters if function.parameters is not None else EMPTY_PARAMETERS
        check_json_schema(parameters, f"tools.{index}.function.parameters")
        if any(spec.name == function.name for spec in specs):
            raise invalid(f"tools.{index}.function.name", f"a second function named {function.name!r}")
        specs.append(ToolSpec(function.name, function.description or "", parameters))
    choice = body.tool_choice_name()
    if choice != "auto" and choice != "none" and not specs:
        raise invalid("tool_choice", "needs `tools`")
    if choice not in ("auto", "none", "required") and choice not in {spec.name for spec in specs}:
        raise invalid("tool_choice", f"names no function of `tools`: {choice!r}")
    return specs


async def images_are_seen(platform: Platform) -> bool | None:
    """True when the backend that would serve the chat sees images, False when `pic2text` can
    caption them for it, None when neither."""
    llm = await platform.status("llm")
    serving = next((b for b in llm.get("backends", []) if b.get("ready")), None)
    if serving is not None and VISION in serving.get("capabilities", []):
        return True
    return False if (await platform.status("pic2text")).get("ready") else None


async def chat_messages(body: ChatCompletionRequest, platform: Platform, principal: Principal) -> list[ChatMessage]:
    names: dict[str, str] = {}  # tool call id -> function name, for the `tool` turns that answer them
    seen: bool | None | str = "unknown"
    messages: list[ChatMessage] = []
    for index, message in enumerate(body.messages):
        calls = tool_calls_of(message, index)
        names.update({call.id: call.name for call in calls})
        texts: list[str] = []
        images: list[bytes] = []
        parts = message.content if isinstance(message.content, list) else []
        if isinstance(message.content, str):
            texts.append(message.content)
        for number, part in enumerate(parts):
            field = f"messages.{index}.content.{number}"
            if part.type == "text":
                texts.append(part.text or "")
            elif part.type == "image_url":
                if part.image_url is None:
                    raise invalid(f"{field}.image_url", "an image_url part needs its image_url")
                if seen == "unknown":
                    seen = await images_are_seen(platform)
                if seen is None:
                    raise invalid(f"{field}.image_url", "no backend of llm sees images, and pic2text is not ready")
                data = await image_bytes(part.image_url.url, f"{field}.image_url")
                if seen:
                    images.append(data)
                else:
                    caption: CaptionResult = await platform.call("pic2text", CaptionRequest(images=[data]), principal)
                    texts.append(f"[image: {caption.text.strip()}]")
            else:
                raise invalid(f"{field}.{part.type}", f"content parts of type {part.type!r} are not supported")
        role = {"developer": "system"}.get(message.role, message.role)
        messages.append(
            ChatMessage(
                role=role,
                content="\n".join(texts),
                tool_calls=calls,
                tool_call_id=message.tool_call_id,
                name=message.name or names.get(message.tool_call_id or ""),
                images=images,
            )
        )
    return messages


def tool_calls_of(message: ChatMessageIn, index: int) -> list[ToolCall]:
    calls = []
    for number, call in enumerate(message.tool_calls or []):
        try:
            json.loads(call.function.arguments)
        except json.JSONDecodeError as exc:
            raise invalid(f"messages.{index}.tool_calls.{number}.function.arguments", "is not JSON") from exc
        calls.append(ToolCall(call.id, call.function.name, call.function.arguments))
    return calls


async def prepare_chat(body: ChatCompletionRequest, platform: Platform, principal: Principal) -> LLMRequest:
    """The LLM request of a chat body, every check of the route done (a 4xx naming the field
    otherwise). Images are captioned here for a backend that does not see them: a `pic2text` call
    of the caller's. Shared by the route, the Responses API and batch lines."""
    await platform.resolve_model(body.model, ("llm",))
    tools = tool_specs(body)
    response_format = body.response_format.to_request() if body.response_format else None
    if response_format is not None and response_format.schema is not None:
        check_json_schema(response_format.schema, "response_format.json_schema.schema")
    messages = await chat_messages(body, platform, principal)
    if not any(m.content.strip() or m.tool_calls or m.images for m in messages):
        raise invalid("messages", "the messages are empty")
    avatar_id = (body.metadata or {}).get("avatar")
    if avatar_id:  # the persona leads; another tenant's avatar is a 404
        avatar = await asyncio.to_thread(avatars.get, platform, principal.tenant, avatar_id)
        if avatar.get("instructions"):
            messages.insert(0, ChatMessage(role="system", content=avatar["instructions"]))
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_CHAT_MAX_TOKENS
    return llm_request(
        body,
        max_tokens,
        platform,
        messages=messages,
        tools=tools,
        tool_choice=body.tool_choice_name(),
        parallel_tool_calls=body.parallel_tool_calls is not False,
        response_format=response_format,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
    )


def chat_completion_body(result: LLMResult, completion_id: str, created: int) -> dict[str, Any]:
    """OpenAI's `chat.completion` of a result."""
    choices = []
    for index, choice in enumerate(result.choices()):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": choice.text if choice.text or not choice.tool_calls else None,
        }
        if choice.tool_calls:
            message["tool_calls"] = tool_calls_body(choice.tool_calls)
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": logprobs_body(choice.logprobs),
                "finish_reason": choice.finish_reason,
            }
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        "choices": choices,
        "usage": usage(result.prompt_tokens, result.completion_tokens),
    }


class ChatChunks:
    """The `chat.completion.chunk`s of one streamed answer: the first delta names the role, a tool
    call is several deltas, the finish reason comes in a chunk of its own."""

    def __init__(self, completion_id: str, created: int) -> None:
        self.completion_id = completion_id
        self.created = created
        self.first_delta = True

    def _chunk(self, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "choices": choices,
        }

    def _event(self, chunk: LLMChunk, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        if self.first_delta:
            delta = {"role": "assistant", **delta}
            self.first_delta = False
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if chunk.logprobs is not None:
            choice["logprobs"] = logprobs_body(chunk.logprobs)
        return self._chunk(chunk.model, [choice])

    def events(self, chunk: LLMChunk) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"tool_calls": [d]} for d in tool_call_deltas(chunk.tool_calls)]
        if chunk.text or not (chunk.finish_reason or deltas):
            deltas.insert(0, {"content": chunk.text})
        events = [self._event(chunk, delta, None) for delta in deltas]
        if chunk.finish_reason:
            events.append(self._event(chunk, {}, chunk.finish_reason))
        return events

    def usage(self, last: LLMChunk) -> dict[str, Any]:
        body = self._chunk(last.model, [])
        body["usage"] = usage(last.prompt_tokens or 0, last.completion_tokens or 0)
        return body


@router.post("/chat/completions", summary="Chat completion (OpenAI format)")
async def chat_completions(
    body: ChatCompletionRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    request = await prepare_chat(body, platform, principal)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        result: LLMResult = await platform.call("llm", request, principal)
        return answered_by(result.model, chat_completion_body(result, completion_id, created))

    chunks = ChatChunks(completion_id, created)
    first, rest = await first_and_rest(platform.stream("llm", request, principal))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        openai_stream(first, rest, chunks.events, include_usage, chunks.usage),
        media_type="text/event-stream",
        headers={MODEL_HEADER: first.model} if first is not None else None,
    )
