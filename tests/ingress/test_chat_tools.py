"""Tools, structured outputs, images and the other chat options through the in-process app, with
the official `openai` client (over the app's `TestClient`) on the real SmolLM2: what is honoured
parses and validates, what is not is a 4xx naming the field."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, OpenAI, UnprocessableEntityError

from tests.helpers import wait_until
from tests.ingress.conftest import InProcessPlatform
from tests.ingress.standins import tiny_png

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather of a city", "parameters": WEATHER_PARAMETERS},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
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


@pytest.fixture()
def client(http: TestClient, user: dict[str, str]) -> OpenAI:
    token = user["Authorization"].removeprefix("Bearer ")
    return OpenAI(base_url=f"{http.base_url}/v1", api_key=token, http_client=http, max_retries=0)


def field_of(error: BadRequestError | UnprocessableEntityError) -> list[str]:
    return [detail["field"] for detail in error.body["details"]]  # type: ignore[index]


def test_a_required_tool_call_validates(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llm", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=80
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)


def test_a_streamed_tool_call_assembles_from_its_deltas(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llm",
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=80,
        stream=True,
    )
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    [call] = calls.values()
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER_PARAMETERS)


def test_a_tool_result_round_trip_ends_with_an_answer(client: OpenAI) -> None:
    first = client.chat.completions.create(
        model="llm", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=80
    )
    [call] = first.choices[0].message.tool_calls or []
    history: list[Any] = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees celsius and sunny"},
    ]
    final = client.chat.completions.create(model="llm", messages=history, tools=[WEATHER], temperature=0, max_tokens=40)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_json_schema_content_validates(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llm",
        messages=[{"role": "user", "content": "Describe a user account as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        temperature=0,
        max_tokens=120,
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), PERSON)


def test_n_choices(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llm", messages=[{"role": "user", "content": "Name a fruit."}], n=2, seed=3, max_tokens=6
    )
    assert [c.index for c in answer.choices] == [0, 1] and all(c.message.content for c in answer.choices)


def test_an_image_is_answered_from_its_caption(client: OpenAI, ingress: InProcessPlatform) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    content: Any = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]
    answer = client.chat.completions.create(
        model="llm", messages=[{"role": "user", "content": content}], max_tokens=8, temperature=0
    )
    assert answer.choices[0].message.content

    def requests() -> dict[str, int]:
        usage = client.get("/usage", cast_to=object)
        return {item["service"]: item["requests"] for item in usage["items"]}  # type: ignore[index]

    # The usage statistics are written off the calls' path, within a moment of them.
    wait_until(lambda: requests().get("llm") == 1, 10, "the chat's usage")
    assert requests().get("pic2text") == 1


def test_models_declare_capabilities_and_the_cascade(http: TestClient, user: dict[str, str]) -> None:
    data = http.get("/v1/models", headers=user).json()["data"]
    llm = next(entry for entry in data if entry["id"] == "llm")
    assert llm["capabilities"]["tools"] is True and llm["capabilities"]["json_schema"] is True
    assert llm["capabilities"]["logprobs"] is False and llm["capabilities"]["vision"] == "cascade:pic2text"
    model = next(entry for entry in data if entry["id"] == "SmolLM2-135M-Instruct")
    assert model["capabilities"]["streaming"] is True


BAD_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "banana"}}}
GRAMMARLESS = {
    "type": "json_schema",
    "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}},
}


@pytest.mark.parametrize(
    ("options", "status", "field"),
    [
        ({"tools": [BAD_TOOL]}, 400, "tools.0.function.parameters"),
        ({"response_format": GRAMMARLESS}, 400, "response_format.json_schema.schema"),
        ({"n": 9}, 422, "n"),
        ({"logprobs": True}, 400, "logprobs"),
        ({"top_logprobs": 2}, 422, "top_logprobs"),
        ({"tool_choice": "required"}, 400, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, 400, "tool_choice"),
        ({"logit_bias": {"42": 5}}, 422, "logit_bias"),
        ({"modalities": ["text", "audio"]}, 422, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, 422, "audio"),
        ({"prediction": {"type": "content", "content": "x"}}, 422, "prediction"),
        ({"n": 2, "stream": True}, 400, "n"),
    ],
)
def test_what_is_not_honoured_is_refused_naming_the_field(
    http: TestClient, user: dict[str, str], options: dict[str, Any], status: int, field: str
) -> None:
    body = {"model": "llm", "messages": ASK, "max_tokens": 8, **options}
    response = http.post("/v1/chat/completions", json=body, headers=user)
    assert response.status_code == status, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]


@pytest.mark.parametrize(
    ("part", "field"),
    [
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "messages.0.content.1.input_audio"),
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "messages.0.content.1.image_url"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}, "messages.0.content.1.image_url"),
        ({"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/none.png"}}, "messages.0.content.1.image_url"),
    ],
)
def test_unusable_content_parts_are_refused(
    http: TestClient, user: dict[str, str], part: dict[str, Any], field: str
) -> None:
    body = {"model": "llm", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]}
    response = http.post("/v1/chat/completions", json=body, headers=user)
    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/none.png",  # the ingress's own machine
        "http://localhost/a.png",
        "http://10.1.2.3/a.png",  # the cluster's network
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata endpoint
        "http://[::1]/a.png",
    ],
)
def test_image_urls_to_private_addresses_are_never_fetched(http: TestClient, user: dict[str, str], url: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    body = {"model": "llm", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]}
    response = http.post("/v1/chat/completions", json=body, headers=user)
    assert response.status_code == 400, response.text
    detail = response.json()["error"]["details"][0]
    reason = "the image URL must point to a public address"
    assert detail == {"field": "messages.0.content.1.image_url", "reason": reason}


@pytest.mark.parametrize(
    ("options", "field"),
    [({"logprobs": 2}, "logprobs"), ({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of")],
)
def test_completions_refuse_what_they_cannot_honour(
    http: TestClient, user: dict[str, str], options: dict[str, Any], field: str
) -> None:
    response = http.post(
        "/v1/completions", json={"model": "llm", "prompt": "Hi", "max_tokens": 4, **options}, headers=user
    )
    assert response.status_code in (400, 422), response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]


def test_completions_echo_and_n(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "llm", "prompt": "The sky is", "max_tokens": 3, "echo": True, "n": 2, "seed": 1}
    choices = http.post("/v1/completions", json=body, headers=user).json()["choices"]
    assert [c["index"] for c in choices] == [0, 1] and all(c["text"].startswith("The sky is") for c in choices)
