"""Tools, structured outputs, images and the other chat options through real HTTP on the running
platform, with the official `openai` client and two agent frameworks as their users run them
(LangChain's `ChatOpenAI`, `instructor`): on the real SmolLM2, what is honoured parses and
validates against its schema; what is not is a 4xx naming the field."""

from __future__ import annotations

import base64
import io
import json
from typing import Any, Literal

import httpx
import instructor
import jsonschema
import openai
import pytest
from langchain_openai import ChatOpenAI
from PIL import Image
from pydantic import BaseModel, Field

from tests.conftest import make_token
from tests.helpers import wait_until

pytestmark = pytest.mark.ray

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather of a city", "parameters": WEATHER_PARAMETERS},
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "role": {"type": "string", "enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def token() -> str:
    return make_token(tenant="chat-tools")


@pytest.fixture(scope="module")
def client(platform_url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=token, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def http(platform_url: str, token: str) -> httpx.Client:
    with httpx.Client(base_url=platform_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as session:
        yield session


def required_call(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="llm", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=80
    )


def test_a_tool_call(client: openai.OpenAI) -> None:
    choice = required_call(client).choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)


def test_a_streamed_tool_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llm", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=80, stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    [call] = calls.values()
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER_PARAMETERS)


def test_a_tool_result_round_trip(client: openai.OpenAI) -> None:
    first = required_call(client)
    [call] = first.choices[0].message.tool_calls or []
    history: Any = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees celsius and sunny"},
    ]
    final = client.chat.completions.create(model="llm", messages=history, tools=[WEATHER], temperature=0, max_tokens=40)
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content


def test_json_schema_content_validates(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llm",
        messages=[{"role": "user", "content": "Describe a user account as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        temperature=0,
        max_tokens=120,
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), PERSON)


def test_an_image_question_is_answered_from_its_caption(client: openai.OpenAI, http: httpx.Client) -> None:
    def pic2text_requests() -> int:
        items = http.get("/v1/usage").json()["items"]
        return sum(item["requests"] for item in items if item["service"] == "pic2text")

    before = pic2text_requests()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content: Any = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    answer = client.chat.completions.create(model="llm", messages=[{"role": "user", "content": content}], max_tokens=12)
    assert answer.choices[0].message.content
    # The usage statistics are written off the calls' path, within a moment of them.
    wait_until(lambda: pic2text_requests() == before + 1, 10, "the caption's usage")


def test_models_declare_the_capabilities(http: httpx.Client) -> None:
    data = http.get("/v1/models").json()["data"]
    llm = next(entry for entry in data if entry["id"] == "llm")
    assert llm["capabilities"]["tools"] is True and llm["capabilities"]["logprobs"] is False
    assert llm["capabilities"]["vision"] == "cascade:pic2text"  # llama.cpp serves first; Gemini would see
    gemini = next(entry for entry in data if entry.get("backend") == "gemini" and entry["service"] == "llm")
    assert gemini["capabilities"]["vision"] is True


@pytest.mark.parametrize(
    ("options", "status", "field"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "banana"}}}]},
            400,
            "tools.0.function.parameters",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}},
                }
            },
            400,
            "response_format.json_schema.schema",
        ),
        ({"n": 9}, 422, "n"),
        ({"logprobs": True, "top_logprobs": 2}, 400, "logprobs"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    http: httpx.Client, options: dict[str, Any], status: int, field: str
) -> None:
    response = http.post("/v1/chat/completions", json={"model": "llm", "messages": ASK, "max_tokens": 8, **options})
    assert response.status_code == status, response.text
    assert field in [detail["field"] for detail in response.json()["error"]["details"]]


# ---------------------------------------------------------------- agent frameworks


class Weather(BaseModel):
    """The weather of a city."""

    city: str = Field(max_length=30)
    unit: Literal["celsius", "fahrenheit"]


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int
    role: Literal["admin", "user"]


def test_langchain_bind_tools_and_structured_output(platform_url: str, token: str) -> None:
    model = ChatOpenAI(
        model="llm", base_url=f"{platform_url}/v1", api_key=token, temperature=0, max_tokens=80, max_retries=0
    )
    message = model.bind_tools([Weather], tool_choice="required").invoke("What is the weather in Paris?")
    [call] = message.tool_calls
    assert call["name"] == "Weather"
    Weather.model_validate(call["args"])

    person = model.with_structured_output(Person).invoke("Describe a user account.")
    assert isinstance(person, Person)


def test_instructor_extracts_a_model(client: openai.OpenAI) -> None:
    patched = instructor.from_openai(client, mode=instructor.Mode.TOOLS)
    person = patched.chat.completions.create(
        model="llm",
        response_model=Person,
        messages=[{"role": "user", "content": "Describe a user account."}],
        temperature=0,
        max_tokens=80,
        max_retries=0,
    )
    assert isinstance(person, Person)
