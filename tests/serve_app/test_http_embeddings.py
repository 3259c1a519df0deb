"""Embeddings through real HTTP on all-MiniLM-L6-v2: the `openai` client, tasks and workflow sinks."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import make_token
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray

SIMILAR = ("A man is eating food.", "A man is eating a piece of bread.")
UNRELATED = "The stock market fell sharply on Monday."


@pytest.fixture(scope="module")
def token() -> str:
    return make_token(tenant=f"emb-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def client(platform_url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=token, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def http(platform_url: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as session:
        yield session


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def assert_unit(vector: list[float]) -> None:
    assert len(vector) == 384 and math.isclose(math.sqrt(cosine(vector, vector)), 1.0, rel_tol=1e-4)


def test_openai_client_one_string(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="embed", input=SIMILAR[0])
    assert [d.index for d in result.data] == [0] and result.model == "all-MiniLM-L6-v2"
    assert_unit(result.data[0].embedding)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 2


def test_openai_client_a_list_keeps_order_and_meaning(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=[*SIMILAR, UNRELATED])
    assert [d.index for d in result.data] == [0, 1, 2]
    food, bread, market = (d.embedding for d in result.data)
    for vector in (food, bread, market):
        assert_unit(vector)
    assert cosine(food, bread) > cosine(food, market) + 0.3
    alone = client.embeddings.create(model="embed", input=UNRELATED, encoding_format="float").data[0].embedding
    assert cosine(alone, market) == pytest.approx(1.0, abs=1e-5)


def test_base64_is_the_float32_array_of_the_float_answer(http: httpx.Client) -> None:
    floats = http.post("/v1/embeddings", json={"model": "embed", "input": UNRELATED}).json()
    packed = http.post("/v1/embeddings", json={"model": "embed", "input": UNRELATED, "encoding_format": "base64"})
    raw = base64.b64decode(packed.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


def test_models_and_readiness_list_embed(http: httpx.Client, platform_url: str) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert models["embed"]["backend"] == "minilm" and models["embed"]["ready"]
    assert models["all-MiniLM-L6-v2"]["service"] == "embed"
    assert httpx.get(f"{platform_url}/readyz").json()["services"]["embed"]["ready"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model": "embed", "input": ""}, 422, "input"),
        ({"model": "embed", "input": []}, 422, "input"),
        ({"model": "embed", "input": [[1, 2, 3]]}, 422, "input"),
        ({"model": "embed", "input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"model": "embed", "input": "x", "dimensions": 256}, 422, "dimensions"),
        ({"model": "embed", "input": ["fine", "   "]}, 400, "input.1"),
    ],
)
def test_bad_embedding_requests(http: httpx.Client, body: dict[str, Any], status: int, field: str) -> None:
    error = assert_error(http.post("/v1/embeddings", json=body), status)
    assert any(d.get("field", "").startswith(field) for d in error["details"]), error


def test_unknown_model_is_404(http: httpx.Client) -> None:
    assert_error(http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}), 404)


def wait_final(http: httpx.Client, path: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (body := http.get(path).json())["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    return body  # type: ignore[no-any-return]


def test_embed_task_output_is_json(http: httpx.Client) -> None:
    response = http.post("/v1/tasks", json={"service": "embed", "prompt": SIMILAR[0]})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    task = wait_final(http, f"/v1/tasks/{task_id}")
    assert task["status"] == "completed" and task["output"]["content_type"] == "application/json"
    output = http.get(f"/v1/tasks/{task_id}/output")
    assert output.headers["content-type"].startswith("application/json")
    assert len(output.content) == task["output"]["bytes"]
    vector = output.json()["embedding"]
    assert_unit(vector)
    direct = http.post("/v1/embeddings", json={"model": "embed", "input": SIMILAR[0]}).json()["data"][0]["embedding"]
    assert cosine(vector, direct) == pytest.approx(1.0, abs=1e-5)
    as_json = http.get(f"/v1/tasks/{task_id}/output", params={"format": "json"}).json()
    assert json.loads(as_json["text"])["embedding"] == vector


def test_embed_sink_in_a_workflow(http: httpx.Client) -> None:
    """An llm writes, an embed node embeds what it wrote: the composed input is the upstream text."""
    body = {
        "nodes": {
            "write": {"service": "llm", "prompt": "Name a fruit.", "params": {"max_tokens": 8, "temperature": 0}},
            "vector": {"service": "EMBED"},
        },
        "edges": [{"from": "write", "to": "vector"}],
    }
    response = http.post("/v1/workflows", json=body)
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    assert wait_final(http, f"/v1/workflows/{workflow_id}")["status"] == "completed"
    written = http.get(f"/v1/workflows/{workflow_id}/outputs/write").text
    vector = http.get(f"/v1/workflows/{workflow_id}/outputs/vector").json()["embedding"]
    direct = http.post("/v1/embeddings", json={"model": "embed", "input": written}).json()["data"][0]["embedding"]
    assert cosine(vector, direct) == pytest.approx(1.0, abs=1e-5)


def test_an_edge_out_of_embed_is_400_naming_the_edge(http: httpx.Client) -> None:
    body = {
        "nodes": {"vector": {"service": "embed", "prompt": "x"}, "say": {"service": "llm"}},
        "edges": [{"from": "vector", "to": "say"}],
    }
    error = assert_error(http.post("/v1/workflows", json=body), 400)
    assert {"edge": {"from": "vector", "to": "say"}} in [{"edge": d.get("edge")} for d in error["details"]], error
    assert_error(http.post("/v1/tasks", json={"service": "embed", "prompt": "x", "params": {"size": 3}}), 422)
