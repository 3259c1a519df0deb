"""Workflows whose `llm` nodes run on vLLM, through HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import make_token
from tests.helpers import submit, wait_final
from tests.vllm.conftest import MAX_MODEL_LEN

pytestmark = pytest.mark.ray

COUNT = "Count from 1 to 10, separated by commas."


@pytest.fixture()
def http(vllm_platform_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(tenant=f'wf-{uuid.uuid4().hex[:8]}')}"}
    with httpx.Client(base_url=vllm_platform_url, headers=headers, timeout=120) as session:
        yield session


def llm(prompt: str, max_tokens: int, **params: object) -> dict[str, object]:
    return {"service": "llm", "prompt": prompt, "params": {"max_tokens": max_tokens, "temperature": 0, **params}}


def test_llm_nodes_chain_on_vllm(http: httpx.Client) -> None:
    """A node answers as the chat endpoint does (same engine, temperature 0), and feeds the next one."""
    body = {
        "nodes": {"count": llm(COUNT, 40, stop=["5"]), "repeat": llm("Repeat these numbers:", 24)},
        "edges": [{"from": "count", "to": "repeat"}],
    }
    workflow_id = submit(http, body)
    nodes = wait_final(http, workflow_id)["nodes"]
    assert [n["status"] for n in nodes.values()] == ["completed", "completed"], nodes
    counted = http.get(f"/v1/workflows/{workflow_id}/outputs/count").text
    messages = [{"role": "user", "content": COUNT}]
    chat = http.post(
        "/v1/chat/completions",
        json={"model": "llm", "messages": messages, "max_tokens": 40, "temperature": 0, "stop": ["5"]},
    ).json()
    assert counted == chat["choices"][0]["message"]["content"] and "4" in counted and "5" not in counted
    assert http.get(f"/v1/workflows/{workflow_id}/outputs/repeat").text.strip()


def test_too_long_prompt_fails_its_node_once_and_skips_the_next(http: httpx.Client) -> None:
    body = {
        "nodes": {"long": llm("word " * MAX_MODEL_LEN, 8), "after": llm("Continue:", 8), "free": llm("Say yes.", 4)},
        "edges": [{"from": "long", "to": "after"}],
    }
    result = wait_final(http, submit(http, body))
    nodes = result["nodes"]
    assert result["status"] == "failed"
    assert nodes["long"]["status"] == "failed" and nodes["long"]["attempts"] == 1  # the client's error: no retry
    assert nodes["after"]["status"] == "skipped" and nodes["free"]["status"] == "completed"
