"""The Responses API's model: its request, turned into a chat request; its result, turned into a
`response` object; and the stored responses a conversation continues from.

A response is stored per tenant (state store namespace `responses`, key `<tenant>/<id>`) with the
items of its conversation: those of the response it continued (its inputs and its outputs), then
its own input. `previous_response_id` continues from there. `instructions` are the response's own
and are not carried over, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from deployments.types import LLMRequest, LLMResult
from modalities.llm import MaxTokens, Temperature, TopP
from serve_app.auth import Principal
from serve_app.errors import ApiError, not_found
from serve_app.openai_format import invalid
from serve_app.platform import Platform
from serve_app.routes.chat import prepare_chat
from serve_app.schemas import FUNCTION_NAME, ChatCompletionRequest, OpenAIModel, refuse_when_set

RESPONSES = "responses"
TEXT = {"type": "text"}
RESPONSE_ID = re.compile(r"^resp_[A-Za-z0-9]{1,64}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---------------------------------------------------------------- the request


class ContentIn(OpenAIModel):
    """A part of an input message: `input_text`, `output_text` (an assistant's, sent back) or
    `input_image` (an `image_url`); others (`input_file`, `input_audio`) are refused naming the part."""

    type: str
    text: str | None = None
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputItemIn(OpenAIModel):
    """An input item: a message (`type` "message" or left out), a `function_call` of the model sent
    back, or the `function_call_output` that answers it; other types are refused naming the item."""

    type: str | None = None
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentIn] | None = None
    call_id: Annotated[str | None, Field(max_length=128)] = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentIn] | None = None


class FunctionToolIn(OpenAIModel):
    """A tool in the Responses' flat shape; only `function` tools are honoured (the built-in tools,
    `web_search`, `file_search` and the others, are refused naming the tool)."""

    type: str
    name: Annotated[str | None, Field(pattern=FUNCTION_NAME)] = None
    description: Annotated[str | None, Field(max_length=10_000)] = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunctionChoice(OpenAIModel):
    type: Literal["function"]
    name: str


class TextFormatIn(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfigIn(OpenAIModel):
    format: TextFormatIn | None = None
    verbosity: Any = Field(default=None, description="Refused: the models here have no verbosity setting.")

    _refused = field_validator("verbosity")(refuse_when_set)


class ResponseCreateRequest(OpenAIModel):
    """`POST /v1/responses`. What changes the answer is honoured or refused (a 400/422 naming the
    field); `user`, `metadata`, `service_tier`, `safety_identifier`, `prompt_cache_key` change nothing."""

    model: str
    input: str | list[InputItemIn]
    instructions: str | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    tools: Annotated[list[FunctionToolIn] | None, Field(max_length=128)] = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfigIn | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    metadata: dict[str, str] | None = None
    # Refused when set: what would change the answer and that no backend here does.
    reasoning: Any = Field(default=None, description="Refused: the models here do not reason.")
    background: bool | None = Field(default=None, description="Refused when true.")
    include: list[str] | None = Field(default=None, description="Refused unless empty.")
    conversation: Any = Field(default=None, description="Refused: use previous_response_id.")
    prompt: Any = Field(default=None, description="Refused: no stored prompts.")
    max_tool_calls: int | None = Field(default=None, description="Refused.")
    top_logprobs: int | None = Field(default=None, description="Refused unless 0.")
    truncation: Literal["disabled"] | None = Field(default=None, description='Only "disabled".')
    context_management: Any = Field(default=None, description="Refused.")

    _refused = field_validator("reasoning", "conversation", "prompt", "max_tool_calls", "context_management")(
        refuse_when_set
    )

    @field_validator("background")
    @classmethod
    def _not_in_background(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("background responses are not supported; use a batch")
        return value

    @field_validator("include", "top_logprobs")
    @classmethod
    def _nothing_more(cls, value: Any) -> Any:
        if value:
            raise ValueError("is not supported by this platform")
        return value


# ---------------------------------------------------------------- items


def _message_item(role: str, parts: list[dict[str, Any]], item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or new_id("msg"), "type": "message", "role": role, "status": "completed", "content": parts}


def _text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def _parts(role: str, content: str | list[ContentIn] | None, field: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_part(role, content)]
    parts = []
    for index, part in enumerate(content):
        if part.type in ("input_text", "output_text"):
            parts.append(_text_part(role, part.text or ""))
        elif part.type == "input_image" and role != "assistant":
            if not part.image_url:
                raise invalid(
                    f"{field}.{index}.image_url", "an input_image needs its image_url (file_id is not supported)"
                )
            parts.append({"type": "input_image", "image_url": part.image_url, "detail": part.detail or "auto"})
        else:
            raise invalid(f"{field}.{index}.type", f"content parts of type {part.type!r} are not supported here")
    return parts


def input_items(value: str | list[InputItemIn]) -> list[dict[str, Any]]:
    """The request's `input` as stored items (each with an id), checked: a 400 naming what is not supported."""
    if isinstance(value, str):
        return [_message_item("user", [_text_part("user", value)])]
    items = []
    for index, item in enumerate(value):
        field = f"input.{index}"
        kind = item.type or "message"
        if kind == "message":
            if item.role is None:
                raise invalid(f"{field}.role", "a message needs its role")
            items.append(_message_item(item.role, _parts(item.role, item.content, f"{field}.content")))
        elif kind == "function_call":
            if not (item.call_id and item.name and item.arguments is not None):
                raise invalid(field, "a function_call needs its call_id, name and arguments")
            items.append(
                {
                    "id": item.id or new_id("fc"),
                    "type": "function_call",
                    "call_id": item.call_id,
                    "name": item.name,
                    "arguments": item.arguments,
                    "status": "completed",
                }
            )
        elif kind == "function_call_output":
            if not item.call_id or item.output is None:
                raise invalid(field, "a function_call_output needs its call_id and output")
            output = item.output
            if not isinstance(output, str):
                output = "\n".join(p["text"] for p in _parts("user", output, f"{field}.output") if "text" in p)
            items.append(
                {
                    "id": new_id("fco"),
                    "type": "function_call_output",
                    "call_id": item.call_id,
                    "output": output,
                    "status": "completed",
                }
            )
        else:
            raise invalid(f"{field}.type", f"input items of type {kind!r} are not supported")
    return items


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation's items as chat messages: a model's function calls join its assistant turn,
    each output is a `tool` turn."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if item["type"] == "message":
            content = [
                {"type": "image_url", "image_url": {"url": p["image_url"]}}
                if p["type"] == "input_image"
                else {"type": "text", "text": p["text"]}
                for p in item["content"]
            ]
            messages.append({"role": item["role"], "content": content})
        elif item["type"] == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def chat_body(body: ResponseCreateRequest, items: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat request of a Responses request over the conversation `items`."""
    messages = chat_messages(items)
    if body.instructions:
        messages.insert(0, {"role": "system", "content": body.instructions})
    chat: dict[str, Any] = {"model": body.model, "messages": messages}
    for name in ("temperature", "top_p", "parallel_tool_calls"):
        if getattr(body, name) is not None:
            chat[name] = getattr(body, name)
    if body.max_output_tokens is not None:
        chat["max_tokens"] = body.max_output_tokens
    for index, tool in enumerate(body.tools or []):
        if tool.type != "function":
            raise invalid(f"tools.{index}.type", f"{tool.type!r} tools are not supported; only function tools are")
        if tool.name is None:
            raise invalid(f"tools.{index}.name", "a function tool needs its name")
    if body.tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "strict": tool.strict,
                },
            }
            for tool in body.tools
        ]
    if isinstance(body.tool_choice, NamedFunctionChoice):
        chat["tool_choice"] = {"type": "function", "function": {"name": body.tool_choice.name}}
    elif body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice
    text_format = body.text.format if body.text else None
    if text_format is not None and text_format.type == "json_schema":
        if text_format.schema_ is None:
            raise invalid("text.format.schema", "a json_schema format needs its schema", 422)
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": text_format.name,
                "description": text_format.description,
                "schema": text_format.schema_,
                "strict": text_format.strict,
            },
        }
    elif text_format is not None:
        chat["response_format"] = {"type": text_format.type}
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        raise ApiError(422, "validation_error", "the request does not make a valid conversation", details) from exc


# ---------------------------------------------------------------- the store


def store_key(tenant: str, response_id: str) -> str:
    return f"{tenant}/{response_id}"


async def load(platform: Platform, tenant: str, response_id: str, field: str | None = None) -> dict[str, Any]:
    """A stored response of the tenant (its document: `response` and `input_items`); 404 otherwise,
    naming `field` when the id came in a body."""
    document = None
    if RESPONSE_ID.match(response_id):
        document = await asyncio.to_thread(platform.store.get, RESPONSES, store_key(tenant, response_id))
    if document is None:
        error = not_found(f"response {response_id!r}")
        if field is not None:
            error.details = [{"field": field, "reason": "no such response"}]
        raise error
    return document


async def save(platform: Platform, tenant: str, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
    document = {"response": response, "input_items": items}
    await asyncio.to_thread(platform.store.put, RESPONSES, store_key(tenant, response["id"]), document)


async def prepare_response(
    body: ResponseCreateRequest, platform: Platform, principal: Principal
) -> tuple[LLMRequest, list[dict[str, Any]]]:
    """The LLM request of a Responses request, and the conversation's items (the previous
    response's, then this input): what the response stores."""
    items = input_items(body.input)
    if body.previous_response_id is not None:
        previous = await load(platform, principal.tenant, body.previous_response_id, "previous_response_id")
        items = [*previous["input_items"], *previous["response"]["output"], *items]
    request = await prepare_chat(chat_body(body, items), platform, principal)
    return request, items


# ---------------------------------------------------------------- the answer


def output_items(result: LLMResult) -> list[dict[str, Any]]:
    """The result as output items: its message (unless it only called functions), then its calls."""
    items: list[dict[str, Any]] = []
    if result.text or not result.tool_calls:
        items.append(_message_item("assistant", [_text_part("assistant", result.text)]))
    items += [
        {
            "id": new_id("fc"),
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        }
        for call in result.tool_calls
    ]
    return items


def usage_body(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    body: ResponseCreateRequest,
    response_id: str,
    created_at: int,
    model: str,
    output: list[dict[str, Any]],
    finish_reason: str | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """OpenAI's `response` object; `finish_reason` None while it is in progress."""
    status = "in_progress" if finish_reason is None else "incomplete" if finish_reason == "length" else "completed"
    text_format = body.text.format if body.text and body.text.format else None
    tool_choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedFunctionChoice) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "text": {
            "format": text_format.model_dump(by_alias=True, exclude_none=True) if text_format else {"type": "text"}
        },
        "tool_choice": tool_choice or body.tool_choice or "auto",
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.metadata or {},
        "background": False,
    }


def completed_response(
    body: ResponseCreateRequest, response_id: str, created_at: int, result: LLMResult
) -> dict[str, Any]:
    return response_object(
        body,
        response_id,
        created_at,
        result.model,
        output_items(result),
        result.finish_reason,
        usage_body(result.prompt_tokens, result.completion_tokens),
    )
