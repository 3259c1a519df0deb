"""The successful paths through the in-process platform: the interactive endpoints on the real small
models (`llm`, `embed`) and the canned backends, and the workflow and task routes over the real
stores, whose running is the executor's (recorded here, run in the Ray tests)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments import media
from modalities import SERVICES
from tests.ingress.conftest import InProcessPlatform
from tests.ingress.standins import silent_wav, tiny_png
from tests.serve_app.contract import assert_error

CHAT = {"model": "llm", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4, "temperature": 0}


def sse_data(lines: list[str]) -> list[Any]:
    """The `data:` payloads of an event stream, JSON-decoded except `[DONE]`."""
    payloads = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    return [payload if payload == "[DONE]" else json.loads(payload) for payload in payloads]


# ---------------------------------------------------------------- interactive calls


def test_chat_completion_on_the_real_model(http: TestClient, user: dict[str, str]) -> None:
    response = http.post("/v1/chat/completions", json=CHAT, headers=user)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "SmolLM2-135M-Instruct"
    assert body["choices"][0]["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_completion_stream_ends_with_usage_and_done(http: TestClient, user: dict[str, str]) -> None:
    body = {**CHAT, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=user) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_data(list(response.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_completion_under_a_backend_model_name(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "SmolLM2-135M-Instruct", "prompt": "The sky is", "max_tokens": 3, "temperature": 0}
    response = http.post("/v1/completions", json=body, headers=user)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "text_completion" and response.json()["usage"]["completion_tokens"] <= 3


def test_a_prompt_longer_than_the_context_is_422(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "llm", "messages": [{"role": "user", "content": "word " * 5000}], "max_tokens": 200}
    assert_error(http.post("/v1/chat/completions", json=body, headers=user), 422, "input_too_large")


def test_embeddings_on_the_real_model(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "embed", "input": ["a cat sat on the mat", "stock prices fell"]}
    response = http.post("/v1/embeddings", json=body, headers=user)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["object"] == "list" and [d["index"] for d in result["data"]] == [0, 1]
    for item in result["data"]:
        vector = item["embedding"]
        assert len(vector) == 384 and math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    assert result["usage"]["prompt_tokens"] > 0


def test_embeddings_in_base64(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "embed", "input": "hello", "encoding_format": "base64"}
    encoded = http.post("/v1/embeddings", json=body, headers=user).json()["data"][0]["embedding"]
    assert len(base64.b64decode(encoded)) == 384 * 4


def test_speech_is_a_wav(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "tts", "input": "Hello.", "voice": "alloy", "response_format": "wav"}
    response = http.post("/v1/audio/speech", json=body, headers=user)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav" and media.wav_info(response.content).seconds > 0


def test_transcription(http: TestClient, user: dict[str, str]) -> None:
    files = {"file": ("hello.wav", silent_wav(), "audio/wav")}
    for response_format, check in (("json", lambda r: r.json()["text"]), ("text", lambda r: r.text)):
        response = http.post(
            "/v1/audio/transcriptions", files=files, data={"response_format": response_format}, headers=user
        )
        assert response.status_code == 200, response.text
        assert check(response) == "canned answer"


def test_image_generation_is_base64_pngs(http: TestClient, user: dict[str, str]) -> None:
    body = {"prompt": "a red square", "size": "64x64", "n": 2}
    response = http.post("/v1/images/generations", json=body, headers=user)
    assert response.status_code == 200, response.text
    images = [media.image_info(base64.b64decode(item["b64_json"])) for item in response.json()["data"]]
    assert [(i.content_type, i.width, i.height) for i in images] == [("image/png", 64, 64)] * 2


def test_captions_of_several_images(http: TestClient, user: dict[str, str]) -> None:
    files = [("file", ("a.png", tiny_png(), "image/png")), ("file", ("b.png", tiny_png(), "image/png"))]
    response = http.post("/v1/images/captions", files=files, headers=user)
    assert response.status_code == 200, response.text
    assert response.json()["text"].split("\n") == ["canned answer", "canned answer"]


def test_models_lists_every_service_and_backend_model(http: TestClient, user: dict[str, str]) -> None:
    models = {m["id"]: m for m in http.get("/v1/models", headers=user).json()["data"]}
    assert set(SERVICES) <= set(models)
    assert models["llm"]["backend"] == "llama_cpp" and models["llm"]["model"] == "SmolLM2-135M-Instruct"
    assert "SmolLM2-135M-Instruct" in models and "all-MiniLM-L6-v2" in models


def test_usage_of_the_callers_tenant(http: TestClient, user: dict[str, str], tenant: str) -> None:
    response = http.get("/v1/usage", headers=user)
    assert response.status_code == 200 and isinstance(response.json()["items"], list)


# ---------------------------------------------------------------- workflows and tasks


@pytest.fixture()
def workflow(http: TestClient, user: dict[str, str]) -> dict[str, Any]:
    body = {
        "name": "story",
        "nodes": {"write": {"service": "llm", "prompt": "Write."}, "speak": {"service": "tts"}},
        "edges": [{"from": "write", "to": "speak"}],
    }
    response = http.post("/v1/workflows", json=body, headers=user)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_submitted_workflow_is_stored_pending_and_started(
    http: TestClient, user: dict[str, str], tenant: str, workflow: dict[str, Any], ingress: InProcessPlatform
) -> None:
    assert workflow["status"] == "pending"
    assert workflow["nodes"] == {"write": {"status": "pending"}, "speak": {"status": "pending"}}
    workflow_id = workflow["workflow_id"]
    assert f"{tenant}/{workflow_id}" in ingress.executor.keys_of("start")
    stored = http.get(f"/v1/workflows/{workflow_id}", headers=user).json()
    assert stored["name"] == "story" and stored["status"] == "pending"
    assert {node["service"] for node in stored["nodes"].values()} == {"llm", "tts"}
    assert stored["created_at"].endswith("Z") or "+" in stored["created_at"]
    listed = http.get("/v1/workflows", params={"status": "pending"}, headers=user).json()
    assert [item["workflow_id"] for item in listed["items"]] == [workflow_id] and listed["total"] == 1


def test_actions_go_to_the_executor(
    http: TestClient, user: dict[str, str], tenant: str, workflow: dict[str, Any], ingress: InProcessPlatform
) -> None:
    workflow_id = workflow["workflow_id"]
    key = f"{tenant}/{workflow_id}"
    assert http.post(f"/v1/workflows/{workflow_id}/cancel", headers=user).status_code == 202
    assert http.post(f"/v1/workflows/{workflow_id}/retry", headers=user).status_code == 202
    assert http.delete(f"/v1/workflows/{workflow_id}", headers=user).status_code == 204
    for method in ("cancel", "retry", "delete"):
        assert key in ingress.executor.keys_of(method), method


def test_no_output_before_the_node_ran(http: TestClient, user: dict[str, str], workflow: dict[str, Any]) -> None:
    workflow_id = workflow["workflow_id"]
    assert_error(http.get(f"/v1/workflows/{workflow_id}/outputs/write", headers=user), 404, "not_found")
    assert_error(http.get(f"/v1/workflows/{workflow_id}/outputs/nobody", headers=user), 404, "not_found")


def test_events_of_a_pending_workflow(http: TestClient, user: dict[str, str], workflow: dict[str, Any]) -> None:
    """The log from the start; the stream ends after `events_max_s` (short on this platform)."""
    with http.stream("GET", f"/v1/workflows/{workflow['workflow_id']}/events", headers=user) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    assert "id: 1" in lines and sse_data(lines) == [{"type": "workflow", "status": "pending"}]


def test_task_lifecycle_at_the_door(
    http: TestClient, user: dict[str, str], tenant: str, ingress: InProcessPlatform
) -> None:
    response = http.post("/v1/tasks", json={"service": "tts", "prompt": "One task.", "priority": "low"}, headers=user)
    assert response.status_code == 202 and response.json()["status"] == "pending"
    task_id = response.json()["task_id"]
    assert f"{tenant}/{task_id}" in ingress.executor.keys_of("start")
    task = http.get(f"/v1/tasks/{task_id}", headers=user).json()
    assert (task["task_id"], task["service"], task["status"]) == (task_id, "tts", "pending")
    assert [t["task_id"] for t in http.get("/v1/tasks", params={"service": "tts"}, headers=user).json()["items"]] == [
        task_id
    ]
    assert http.get("/v1/tasks", params={"service": "llm"}, headers=user).json()["total"] == 0
    assert_error(http.get(f"/v1/tasks/{task_id}/output", headers=user), 404, "not_found")
    # A task is not a workflow, nor the other way round.
    assert_error(http.get(f"/v1/workflows/{task_id}", headers=user), 404, "not_found")


def test_an_original_platform_body_is_accepted(http: TestClient, user: dict[str, str], tenant: str) -> None:
    body = {
        "dag_id": "dag-1",
        "tenant_id": tenant,
        "nodes": {"node1": {"service": "TTS"}, "node2": {"service": "STT"}},
        "edges": [{"from": "node1", "to": "node2", "prompt": "x"}],
        "inputs": {"node1": {"text": "Hello there."}},
    }
    response = http.post("/v1/workflows", json=body, headers=user)
    assert response.status_code == 202 and response.json()["workflow_id"] == "dag-1"
    assert_error(http.post("/v1/workflows", json=body, headers=user), 409, "conflict")


def test_an_upload_feeds_a_task(http: TestClient, user: dict[str, str]) -> None:
    uploaded = http.put("/v1/uploads", content=silent_wav(), headers={**user, "Content-Type": "audio/wav"})
    assert uploaded.status_code == 201
    body = {"service": "stt", "input": {"upload_id": uploaded.json()["upload_id"]}}
    assert http.post("/v1/tasks", json=body, headers=user).status_code == 202
