"""A config change rolled out while a workflow runs: the workflow still completes.

Redeploying changes the llm deployment's and the ingress's arguments, so Serve replaces their
replicas (old ones finish their requests first: `graceful_shutdown_timeout_s`), while the executor
and scheduler actors carry on. Kept last among the platform tests: it redeploys the session's app.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from ray import serve

from tests.conftest import build_platform, make_token, session_args
from tests.fakes.gemini_server import FakeGemini

pytestmark = pytest.mark.ray


def test_redeploy_during_a_running_workflow(
    platform_url: str, platform_data_dir: Path, session_gemini: FakeGemini
) -> None:
    headers = {"Authorization": f"Bearer {make_token(tenant='rolling')}"}
    body = {
        "nodes": {
            "first": {"service": "llm", "prompt": "Write three sentences about autumn.", "params": {"max_tokens": 64}},
            "second": {"service": "llm", "prompt": "Summarise:", "params": {"max_tokens": 16}},
            "speak": {"service": "tts"},
        },
        "edges": [{"from": "first", "to": "second"}, {"from": "second", "to": "speak"}],
    }
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as client:
        workflow_id = client.post("/v1/workflows", json=body).json()["workflow_id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/workflows/{workflow_id}").json()["nodes"]["first"]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        args = session_args(session_gemini)
        args["services"]["llm"]["timeout_s"] = 299  # a change of the llm deployment's config: a new version
        changed = build_platform(platform_data_dir, args)
        serve.run(changed, name="labubu", route_prefix="/")  # returns once the new version is up
        deadline = time.monotonic() + 240
        while (record := client.get(f"/v1/workflows/{workflow_id}").json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
    assert record["status"] == "completed", record
    assert all(node["status"] == "completed" for node in record["nodes"].values())
