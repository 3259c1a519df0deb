"""The Responses API through real HTTP on the running platform, with the official `openai` client:
a conversation that continues from its stored response, a function tool's round trip, and a
stream's typed events in order."""

from __future__ import annotations

import json
import uuid

import jsonschema
import openai
import pytest

from tests.conftest import make_token

pytestmark = pytest.mark.ray

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


@pytest.fixture(scope="module")
def client(platform_url: str) -> openai.OpenAI:
    token = make_token(tenant=f"responses-{uuid.uuid4().hex[:8]}", sub="alice")
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=token, max_retries=0, timeout=120)


def test_a_conversation_continues_from_the_stored_response(client: openai.OpenAI) -> None:
    first = client.responses.create(model="llm", input="My name is Ada.", max_output_tokens=16, temperature=0)
    assert first.status in ("completed", "incomplete") and first.model == "SmolLM2-135M-Instruct"
    second = client.responses.create(
        model="llm", input="What is my name?", previous_response_id=first.id, max_output_tokens=16, temperature=0
    )
    items = list(client.responses.input_items.list(second.id, order="asc"))
    texts = [part.text for item in items if item.type == "message" for part in item.content]  # type: ignore[union-attr]
    assert texts == ["My name is Ada.", first.output_text, "What is my name?"]
    assert client.responses.retrieve(second.id).previous_response_id == first.id


def test_a_function_tool_round_trip(client: openai.OpenAI) -> None:
    asked = client.responses.create(
        model="llm",
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    [call] = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)
    answered = client.responses.create(
        model="llm",
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}],
        max_output_tokens=30,
        temperature=0,
    )
    assert [item.type for item in answered.output] == ["message"] and answered.output_text


def test_a_stream_sends_the_typed_events_in_order(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="llm", input="Say hi.", max_output_tokens=8, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert events[-1].response.output_text == text  # type: ignore[union-attr]
