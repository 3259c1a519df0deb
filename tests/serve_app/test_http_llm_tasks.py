"""LLM task types end to end on the CPU LLM (SmolLM2, greedy): tasks and a workflow node, and their 422s."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import make_token
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray

ARTICLE = (
    "The Amazon rainforest covers much of the Amazon basin of South America. It is home to millions of "
    "species of insects, plants, birds and other animals, and it produces a large share of the world's "
    "oxygen. Deforestation by logging and farming threatens it."
)
GREEDY = {"temperature": 0, "max_tokens": 16}


@pytest.fixture(scope="module")
def http(platform_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(tenant=f'tasks-{uuid.uuid4().hex[:8]}')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as session:
        yield session


def run_tasks(http: httpx.Client, bodies: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Submit every task at once, then each one's output text."""
    ids = {}
    for name, body in bodies.items():
        response = http.post("/v1/tasks", json={"service": "llm", **body})
        assert response.status_code == 202, response.text
        ids[name] = response.json()["task_id"]
    deadline = time.monotonic() + 300  # generous: a shared 2-core machine may be busy
    outputs = {}
    for name, task_id in ids.items():
        while (task := http.get(f"/v1/tasks/{task_id}").json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, task
            time.sleep(0.2)
        assert task["status"] == "completed", task
        outputs[name] = http.get(f"/v1/tasks/{task_id}/output").text
    return outputs


def test_each_task_type_on_the_cpu_llm(http: httpx.Client) -> None:
    outputs = run_tasks(
        http,
        {
            "generate": {"prompt": "Name a colour.", "params": GREEDY},
            "summarize": {"prompt": ARTICLE, "params": {**GREEDY, "task": "summarize", "max_tokens": 32}},
            "translate": {
                "prompt": "Good morning.",
                "params": {**GREEDY, "task": "translate", "target_language": "French"},
            },
            "template": {
                "prompt": "Good morning, my friend.",
                "params": {**GREEDY, "task": "template", "template": "Say this in French: {input}"},
            },
        },
    )
    assert outputs["generate"].strip()
    assert "Amazon" in outputs["summarize"] and len(outputs["summarize"]) < len(ARTICLE)
    # The model only speaks French when the platform's prompt asked it to, around the user's text.
    assert "bonjour" in outputs["translate"].lower(), outputs
    assert "bonjour" in outputs["template"].lower(), outputs


def test_a_workflow_node_translates_its_composed_input(http: httpx.Client) -> None:
    body = {
        "nodes": {"fr": {"service": "llm", "params": {**GREEDY, "task": "translate", "target_language": "French"}}},
        "inputs": {"fr": {"text": "Good morning."}},
    }
    response = http.post("/v1/workflows", json=body)
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    deadline = time.monotonic() + 300  # generous: a shared 2-core machine may be busy
    while (workflow := http.get(f"/v1/workflows/{workflow_id}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, workflow
        time.sleep(0.2)
    assert workflow["status"] == "completed", workflow
    assert "bonjour" in http.get(f"/v1/workflows/{workflow_id}/outputs/fr").text.lower()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"task": "translate"}, "target_language"),
        ({"task": "template", "template": "no placeholder"}, "template"),
        ({"task": "sing"}, "task"),
    ],
)
def test_bad_combinations_are_422_with_the_field(http: httpx.Client, params: dict[str, Any], field: str) -> None:
    error = assert_error(http.post("/v1/tasks", json={"service": "llm", "prompt": "x", "params": params}), 422)
    assert [d["field"] for d in error["details"]] == [f"nodes.task.params.{field}"]
    workflow = {"nodes": {"w": {"service": "llm", "prompt": "x", "params": params}}}
    error = assert_error(http.post("/v1/workflows", json=workflow), 422)
    assert [d["field"] for d in error["details"]] == [f"nodes.w.params.{field}"]
