"""The Responses API through the in-process app, with the official `openai` client on the real
SmolLM2: conversations, function tools, structured text, streaming, per-tenant storage, and the
fields that are refused naming themselves."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI, UnprocessableEntityError

from tests.conftest import make_token

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city",
    "parameters": WEATHER_PARAMETERS,
}


def client_of(http: TestClient, token: str) -> OpenAI:
    return OpenAI(base_url=f"{http.base_url}/v1", api_key=token, http_client=http, max_retries=0)


@pytest.fixture()
def client(http: TestClient, user: dict[str, str]) -> OpenAI:
    return client_of(http, user["Authorization"].removeprefix("Bearer "))


def fields(error: BadRequestError | UnprocessableEntityError | NotFoundError) -> list[str]:
    return [detail["field"] for detail in error.body["details"]]  # type: ignore[index]


def test_a_conversation_continues_from_its_previous_response(client: OpenAI) -> None:
    first = client.responses.create(model="llm", input="My name is Ada.", max_output_tokens=16, temperature=0)
    assert first.status in ("completed", "incomplete") and first.model == "SmolLM2-135M-Instruct"
    assert first.output_text and first.usage is not None and first.usage.output_tokens > 0
    second = client.responses.create(
        model="llm",
        input=[{"role": "user", "content": "What is my name?"}],
        previous_response_id=first.id,
        instructions="Answer in a few words.",
        max_output_tokens=16,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    items = list(client.responses.input_items.list(second.id, order="asc"))
    texts = [part.text for item in items if item.type == "message" for part in item.content]  # type: ignore[union-attr]
    assert texts == ["My name is Ada.", first.output_text, "What is my name?"]
    assert [item.role for item in items] == ["user", "assistant", "user"]  # type: ignore[union-attr]
    assert client.responses.retrieve(second.id).output_text == second.output_text


def test_a_function_call_and_its_output_make_a_final_answer(client: OpenAI) -> None:
    asked = client.responses.create(
        model="llm",
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    [call] = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)
    answered = client.responses.create(
        model="llm",
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}],
        tools=[WEATHER],  # type: ignore[list-item]
        max_output_tokens=30,
        temperature=0,
    )
    assert [item.type for item in answered.output] == ["message"] and answered.output_text


def test_a_json_schema_text_format_validates(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    answer = client.responses.create(
        model="llm",
        input="Pick a colour.",
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}},
        max_output_tokens=40,
        temperature=0,
    )
    jsonschema.validate(json.loads(answer.output_text), schema)


def test_a_stream_has_the_typed_events_in_order(client: OpenAI) -> None:
    events = list(client.responses.create(model="llm", input="Say hi.", max_output_tokens=8, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == text
    assert client.responses.retrieve(completed.id).output_text == text


def test_a_streamed_function_call_has_its_argument_events(client: OpenAI) -> None:
    events = list(
        client.responses.create(
            model="llm",
            input="Weather in Rome?",
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "name": "get_weather"},
            max_output_tokens=60,
            temperature=0,
            stream=True,
        )
    )
    deltas = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    [done] = [event for event in events if event.type == "response.function_call_arguments.done"]
    assert done.arguments == deltas
    jsonschema.validate(json.loads(deltas), WEATHER_PARAMETERS)


def test_another_tenants_response_is_not_found(client: OpenAI, http: TestClient) -> None:
    mine = client.responses.create(model="llm", input="Hello.", max_output_tokens=4)
    other = client_of(http, make_token(tenant="someone-else", sub="eve"))
    with pytest.raises(NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(NotFoundError):
        other.responses.input_items.list(mine.id)
    with pytest.raises(NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(NotFoundError) as caught:
        other.responses.create(model="llm", input="Hi.", previous_response_id=mine.id, max_output_tokens=4)
    assert fields(caught.value) == ["previous_response_id"]
    client.responses.delete(mine.id)
    with pytest.raises(NotFoundError):
        client.responses.retrieve(mine.id)


def test_store_false_keeps_nothing(client: OpenAI) -> None:
    answer = client.responses.create(model="llm", input="Hello.", max_output_tokens=4, store=False)
    with pytest.raises(NotFoundError):
        client.responses.retrieve(answer.id)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"include": ["file_search_call.results"]}, "include"),
        ({"truncation": "auto"}, "truncation"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ],
)
def test_unsupported_fields_are_refused_naming_them(client: OpenAI, extra: dict[str, Any], field: str) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        client.responses.create(model="llm", input="Hi.", **extra)
    assert any(name.startswith(field) for name in fields(caught.value))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": [{"type": "input_file", "file_id": "file-1"}]}, "input.0.type"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input.0.content.0.type"),
    ],
)
def test_built_in_tools_and_other_items_are_refused(client: OpenAI, extra: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.responses.create(**{"model": "llm", "input": "Hi.", **extra})
    assert fields(caught.value) == [field]
