"""Validation at the door (API.md, "Errors"): a schema error is a 422 whose `details` name the field,
a well-formed workflow that breaks a rule is a 400 naming the node, edge or field, an unknown model
is a 404 `model_not_found`. Nothing here reaches a model."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.ingress.standins import silent_wav, tiny_png
from tests.serve_app.contract import assert_error

CHAT = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}


def llm(prompt: str = "x", **params: Any) -> dict[str, Any]:
    return {"service": "llm", "prompt": prompt, "params": params}


def fields(error: dict[str, Any]) -> list[str]:
    return [detail["field"] for detail in error["details"] if "field" in detail]


# ---------------------------------------------------------------- 422: the schema


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/chat/completions", {"messages": CHAT["messages"]}, "model"),
        ("/v1/chat/completions", {"model": "llm"}, "messages"),
        ("/v1/chat/completions", {"model": "llm", "messages": []}, "messages"),
        ("/v1/chat/completions", {"model": "llm", "messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"model": "llm", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 100_000}, "max_tokens"),  # over llm_max_tokens
        ("/v1/chat/completions", {**CHAT, "max_completion_tokens": -1}, "max_completion_tokens"),
        ("/v1/chat/completions", {**CHAT, "temperature": 5}, "temperature"),
        ("/v1/chat/completions", {**CHAT, "top_p": 0}, "top_p"),
        ("/v1/chat/completions", {**CHAT, "n": 9}, "n"),
        ("/v1/chat/completions", {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("/v1/chat/completions", {**CHAT, "seed": -1}, "seed"),
        ("/v1/chat/completions", {**CHAT, "seed": 2**32}, "seed"),
        ("/v1/completions", {"model": "llm"}, "prompt"),
        ("/v1/completions", {"model": "llm", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"model": "llm", "prompt": ["a", "b"]}, "prompt"),
        ("/v1/completions", {"model": "llm", "prompt": "hi", "temperature": -1}, "temperature"),
        ("/v1/embeddings", {"model": "embed"}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": []}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": ""}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": "hi", "encoding_format": "hex"}, "encoding_format"),
        ("/v1/embeddings", {"model": "embed", "input": "hi", "dimensions": 0}, "dimensions"),
        ("/v1/embeddings", {"input": "hi"}, "model"),
        ("/v1/audio/speech", {"model": "tts", "input": ""}, "input"),
        ("/v1/audio/speech", {"model": "tts", "input": "x" * 4097}, "input"),
        ("/v1/audio/speech", {"model": "tts", "input": "hi", "response_format": "ogg"}, "response_format"),
        ("/v1/audio/speech", {"model": "tts", "input": "hi", "speed": 10}, "speed"),
        ("/v1/images/generations", {"prompt": "a cat", "size": "4096x4096"}, "size"),
        ("/v1/images/generations", {"prompt": "a cat", "size": "big"}, "size"),
        ("/v1/images/generations", {"prompt": "a cat", "n": 0}, "n"),
        ("/v1/images/generations", {"prompt": "a cat", "n": 5}, "n"),
        ("/v1/images/generations", {"prompt": "a cat", "steps": 0}, "steps"),
        ("/v1/images/generations", {"prompt": "a cat", "seed": -1}, "seed"),
        ("/v1/images/generations", {"prompt": "a cat", "seed": 2**32}, "seed"),
        ("/v1/images/generations", {"prompt": "a cat", "seed": 2**70}, "seed"),
        ("/v1/images/generations", {"prompt": ""}, "prompt"),
        ("/v1/images/generations", {"prompt": "a cat", "response_format": "gif"}, "response_format"),
        ("/v1/tasks", {"prompt": "x"}, "service"),
        ("/v1/tasks", {"service": "llm", "prompt": "x", "priority": "urgent"}, "priority"),
        ("/v1/tasks", {"service": "llm", "prompt": "x", "colour": "red"}, "colour"),
        ("/v1/tasks", {"service": "llm", "prompt": "x" * 100_001}, "prompt"),
        ("/v1/tasks", {"service": "llm", "prompt": "x", "input": {"text": "a", "upload_id": "b"}}, "input"),
        ("/v1/tasks", {"service": "llm", "prompt": "x", "input": {"data_b64": "AAAA"}}, "input"),
        ("/v1/tasks", llm(max_tokens=0), "nodes.task.params.max_tokens"),
        ("/v1/tasks", llm(max_tokens=100_000), "nodes.task.params.max_tokens"),
        ("/v1/tasks", llm(temperature=3), "nodes.task.params.temperature"),
        ("/v1/tasks", llm(colour="red"), "nodes.task.params.colour"),
        ("/v1/tasks", llm(task="translate"), "nodes.task.params.target_language"),
        ("/v1/tasks", {"service": "embed", "prompt": "x", "params": {"model": "big"}}, "nodes.task.params.model"),
        ("/v1/workflows", {"edges": []}, "nodes"),
        ("/v1/workflows", {"nodes": "not a dict"}, "nodes"),
        ("/v1/workflows", {"nodes": {"a": llm()}, "priority": "urgent"}, "priority"),
        ("/v1/workflows", {"nodes": {"a": {"prompt": "x"}}}, "nodes.a.service"),
        ("/v1/workflows", {"nodes": {"a": llm()}, "edges": [{"from": "a"}]}, "edges.0.to"),
        ("/v1/workflows", {"nodes": {"a": llm(max_tokens=0)}}, "nodes.a.params.max_tokens"),
        ("/v1/workflows", {"nodes": {"a": llm(seed=2**40)}}, "nodes.a.params.seed"),
        ("/v1/workflows", {"nodes": {"a": llm()}, "dag_id": "x" * 65}, "dag_id"),
        ("/v1/workflows", {"nodes": {"a": llm()}, "edges": [{"from": "a", "to": "b"}] * 10_001}, "edges"),
    ],
)
def test_schema_errors_are_422_naming_the_field(
    http: TestClient, user: dict[str, str], path: str, body: dict[str, Any], field: str
) -> None:
    error = assert_error(http.post(path, json=body, headers=user), 422, "validation_error")
    assert field in fields(error), error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"weight": 0}, "weight"),
        ({"weight": -1}, "weight"),
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"max_concurrency": 1.5}, "max_concurrency"),
        ({"rate_per_s": -0.5}, "rate_per_s"),
        ({"burst": -1}, "burst"),
        ({"max_queued": -1}, "max_queued"),
        ({"colour": "red"}, "colour"),
        ({"weight": "heavy"}, "weight"),
    ],
)
def test_bad_tenant_settings_are_422_naming_the_field(
    http: TestClient, admin: dict[str, str], tenant: str, body: dict[str, Any], field: str
) -> None:
    error = assert_error(http.put(f"/v1/admin/tenants/{tenant}", json=body, headers=admin), 422, "validation_error")
    assert field in fields(error), error
    # Nothing was stored: the tenant still has the defaults.
    assert http.get(f"/v1/admin/tenants/{tenant}", headers=admin).json()["configured"] is False


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/workflows", {"limit": 0}),
        ("/v1/workflows", {"limit": 201}),
        ("/v1/workflows", {"offset": -1}),
        ("/v1/workflows", {"status": "sleeping"}),
        ("/v1/tasks", {"limit": "many"}),
        ("/v1/usage", {"days": 0}),
        ("/v1/usage", {"days": 367}),
    ],
)
def test_bad_query_parameters_are_422(
    http: TestClient, user: dict[str, str], path: str, params: dict[str, Any]
) -> None:
    error = assert_error(http.get(path, params=params, headers=user), 422, "validation_error")
    assert list(params)[0] in fields(error), error


def test_admin_usage_filters_are_checked(http: TestClient, admin: dict[str, str]) -> None:
    for params, field in (({"tenant": "a/b"}, "tenant"), ({"service": "video"}, "service")):
        error = assert_error(http.get("/v1/admin/usage", params=params, headers=admin), 422, "validation_error")
        assert field in fields(error)


def test_malformed_json_is_422(http: TestClient, user: dict[str, str]) -> None:
    for path in ("/v1/chat/completions", "/v1/workflows", "/v1/tasks"):
        response = http.post(path, content=b"{not json", headers={**user, "Content-Type": "application/json"})
        assert_error(response, 422, "validation_error")


def test_a_body_that_is_not_utf8_is_a_4xx(http: TestClient, user: dict[str, str]) -> None:
    response = http.post(
        "/v1/chat/completions", content=b'{"model": "\xff"}', headers={**user, "Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code)


# ---------------------------------------------------------------- 400: well-formed, but wrong


def test_empty_texts_are_400(http: TestClient, user: dict[str, str]) -> None:
    blank = [{"role": "user", "content": "   "}]
    cases = [
        ("/v1/chat/completions", {"model": "llm", "messages": blank}, "messages"),
        ("/v1/completions", {"model": "llm", "prompt": ""}, "prompt"),
        ("/v1/audio/speech", {"model": "tts", "input": "   "}, "input"),
        ("/v1/images/generations", {"prompt": "   "}, "prompt"),
        ("/v1/embeddings", {"model": "embed", "input": ["fine", "  "]}, "input.1"),
    ]
    for path, body, field in cases:
        error = assert_error(http.post(path, json=body, headers=user), 400)
        assert field in fields(error), (path, error)


def audio_b64() -> dict[str, str]:
    return {"data_b64": base64.b64encode(silent_wav()).decode(), "content_type": "audio/wav"}


def image_b64() -> dict[str, str]:
    return {"data_b64": base64.b64encode(tiny_png()).decode(), "content_type": "image/png"}


# Each: a workflow, and what `details` must name: ("node", id), ("edge", (from, to)) or ("field", name).
INVALID_WORKFLOWS: dict[str, tuple[dict[str, Any], tuple[str, Any]]] = {
    "no-nodes": ({"nodes": {}}, ("field", "nodes")),
    "cycle": (
        {"nodes": {"a": llm(), "b": llm()}, "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]},
        ("node", "a"),
    ),
    "longer-cycle": (
        {
            "nodes": {"a": llm(), "b": llm(), "c": llm()},
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "a"}],
        },
        ("edge", ("c", "a")),
    ),
    "unknown-service": ({"nodes": {"a": {"service": "video"}}}, ("node", "a")),
    "edge-to-unknown-node": ({"nodes": {"a": llm()}, "edges": [{"from": "a", "to": "zz"}]}, ("edge", ("a", "zz"))),
    "edge-from-unknown-node": ({"nodes": {"a": llm()}, "edges": [{"from": "zz", "to": "a"}]}, ("edge", ("zz", "a"))),
    "self-loop": ({"nodes": {"a": llm()}, "edges": [{"from": "a", "to": "a"}]}, ("edge", ("a", "a"))),
    "duplicate-edge": (
        {"nodes": {"a": llm(), "b": llm()}, "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "b"}]},
        ("edge", ("a", "b")),
    ),
    "audio-into-llm": (
        {"nodes": {"say": {"service": "tts", "prompt": "hi"}, "a": llm()}, "edges": [{"from": "say", "to": "a"}]},
        ("edge", ("say", "a")),
    ),
    "text-into-stt": (
        {"nodes": {"a": llm(), "hear": {"service": "stt"}}, "edges": [{"from": "a", "to": "hear"}]},
        ("edge", ("a", "hear")),
    ),
    "image-into-tts": (
        {
            "nodes": {"paint": {"service": "text2pic", "prompt": "a dot"}, "say": {"service": "tts"}},
            "edges": [{"from": "paint", "to": "say"}],
        },
        ("edge", ("paint", "say")),
    ),
    "vector-into-llm": (
        {"nodes": {"e": {"service": "embed", "prompt": "x"}, "a": llm()}, "edges": [{"from": "e", "to": "a"}]},
        ("edge", ("e", "a")),
    ),
    "two-audio-inputs-into-stt": (
        {
            "nodes": {
                "s1": {"service": "tts", "prompt": "one"},
                "s2": {"service": "tts", "prompt": "two"},
                "hear": {"service": "stt"},
            },
            "edges": [{"from": "s1", "to": "hear"}, {"from": "s2", "to": "hear"}],
        },
        ("node", "hear"),
    ),
    "bad-node-id": ({"nodes": {"a b": llm()}}, ("node", "a b")),
    "slash-in-node-id": ({"nodes": {"../a": llm()}}, ("node", "../a")),
    "long-node-id": ({"nodes": {"n" * 65: llm()}}, ("node", "n" * 65)),
    "empty-node-id": ({"nodes": {"": llm()}}, ("node", "")),
    "too-many-nodes": ({"nodes": {f"n{i}": llm() for i in range(65)}}, ("field", "nodes")),
    "too-many-edges": (
        {
            "nodes": {f"n{i}": llm() for i in range(64)},
            "edges": [{"from": f"n{i % 63}", "to": f"n{63 - i % 63}"} for i in range(10_000)],
        },
        ("field", "edges"),
    ),
    "inputs-of-unknown-node": ({"nodes": {"a": llm()}, "inputs": {"zz": {"text": "hi"}}}, ("field", "inputs.zz")),
    "root-stt-without-media": ({"nodes": {"hear": {"service": "stt"}}}, ("node", "hear")),
    "root-pic2text-without-media": ({"nodes": {"look": {"service": "pic2text"}}}, ("node", "look")),
    "text-input-for-stt": (
        {"nodes": {"hear": {"service": "stt"}}, "inputs": {"hear": {"text": "not audio"}}},
        ("node", "hear"),
    ),
    "image-input-for-stt": (
        {"nodes": {"hear": {"service": "stt"}}, "inputs": {"hear": image_b64()}},
        ("field", "inputs.hear"),
    ),
    "audio-input-for-llm": ({"nodes": {"a": llm()}, "inputs": {"a": audio_b64()}}, ("field", "inputs.a")),
    "llm-with-nothing-to-say": ({"nodes": {"a": {"service": "llm"}}}, ("node", "a")),
    "speech-too-long": ({"nodes": {"say": {"service": "tts", "prompt": "word " * 1000}}}, ("node", "say")),
    "not-base64": (
        {"nodes": {"hear": {"service": "stt"}}, "inputs": {"hear": {"data_b64": "%%%", "content_type": "audio/wav"}}},
        ("field", "inputs.hear"),
    ),
    "wav-that-is-not-a-wav": (
        {
            "nodes": {"hear": {"service": "stt"}},
            "inputs": {"hear": {"data_b64": "UklGRmJhZA==", "content_type": "audio/wav"}},
        },
        ("field", "inputs.hear"),
    ),
    "broken-png": (
        {
            "nodes": {"look": {"service": "pic2text"}},
            "inputs": {
                "look": {"data_b64": base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode(), "content_type": "image/png"}
            },
        },
        ("field", "inputs.look"),
    ),
    "jpeg-labelled-png": (
        {
            "nodes": {"look": {"service": "pic2text"}},
            "inputs": {"look": {**image_b64(), "content_type": "image/jpeg"}},
        },
        ("field", "inputs.look"),
    ),
    "unknown-upload": (
        {"nodes": {"hear": {"service": "stt"}}, "inputs": {"hear": {"upload_id": "up_00000000000000000000"}}},
        ("field", "inputs.hear"),
    ),
    "traversal-upload": (
        {"nodes": {"hear": {"service": "stt"}}, "inputs": {"hear": {"upload_id": "../../etc/passwd"}}},
        ("field", "inputs.hear"),
    ),
}


def named(error: dict[str, Any], where: tuple[str, Any]) -> bool:
    kind, value = where
    for detail in error["details"]:
        if kind == "edge" and detail.get("edge") == {"from": value[0], "to": value[1]}:
            return True
        if kind != "edge" and detail.get(kind) == value:
            return True
    return False


@pytest.mark.parametrize("case", list(INVALID_WORKFLOWS))
def test_invalid_workflows_are_400_naming_what_is_wrong(http: TestClient, user: dict[str, str], case: str) -> None:
    body, where = INVALID_WORKFLOWS[case]
    error = assert_error(http.post("/v1/workflows", json=body, headers=user), 400)
    assert named(error, where), error
    assert http.get("/v1/workflows", headers=user).json()["total"] == 0  # nothing was stored


def test_every_problem_is_named_at_once(http: TestClient, user: dict[str, str]) -> None:
    body = {
        "nodes": {"a": llm(), "b": {"service": "video"}, "c d": llm()},
        "edges": [{"from": "a", "to": "zz"}, {"from": "a", "to": "a"}],
        "inputs": {"q": {"text": "x"}},
    }
    error = assert_error(http.post("/v1/workflows", json=body, headers=user), 400)
    for where in (("node", "b"), ("node", "c d"), ("edge", ("a", "zz")), ("edge", ("a", "a")), ("field", "inputs.q")):
        assert named(error, where), (where, error)


def test_a_task_is_checked_as_a_one_node_workflow(http: TestClient, user: dict[str, str]) -> None:
    assert_error(http.post("/v1/tasks", json={"service": "video", "prompt": "x"}, headers=user), 400)
    assert_error(http.post("/v1/tasks", json={"service": "stt"}, headers=user), 400)
    assert_error(http.post("/v1/tasks", json={"service": "tts", "prompt": "word " * 1000}, headers=user), 400)
    inline = {"data_b64": "UklGRmJhZA==", "content_type": "audio/wav"}
    assert_error(http.post("/v1/tasks", json={"service": "stt", "input": inline}, headers=user), 400)


def test_services_are_case_insensitive(http: TestClient, user: dict[str, str]) -> None:
    body = {
        "nodes": {"say": {"service": "TTS", "prompt": "hi"}, "hear": {"service": "STT"}},
        "edges": [{"from": "say", "to": "hear"}],
    }
    assert http.post("/v1/workflows", json=body, headers=user).status_code == 202


# ---------------------------------------------------------------- 404: an unknown model


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "model": "gpt-9"}),
        ("/v1/completions", {"model": "gpt-9", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "gpt-9", "input": "hi"}),
        ("/v1/audio/speech", {"model": "gpt-9", "input": "hi"}),
        ("/v1/images/generations", {"model": "gpt-9", "prompt": "a cat"}),
    ],
)
def test_an_unknown_model_is_404(http: TestClient, user: dict[str, str], path: str, body: dict[str, Any]) -> None:
    assert_error(http.post(path, json=body, headers=user), 404, "model_not_found")


def test_an_unknown_model_is_404_on_the_multipart_routes(http: TestClient, user: dict[str, str]) -> None:
    audio = {"file": ("x.wav", silent_wav(), "audio/wav")}
    response = http.post("/v1/audio/transcriptions", files=audio, data={"model": "gpt-9"}, headers=user)
    assert_error(response, 404, "model_not_found")
    image = {"file": ("x.png", tiny_png(), "image/png")}
    response = http.post("/v1/images/captions", files=image, data={"model": "gpt-9"}, headers=user)
    assert_error(response, 404, "model_not_found")


def test_a_model_of_another_service_is_404(http: TestClient, user: dict[str, str]) -> None:
    assert_error(http.post("/v1/chat/completions", json={**CHAT, "model": "tts"}, headers=user), 404, "model_not_found")
