"""A backlog queued in the scheduler still scales its deployment: `tts` goes from 1 replica to 2
under a burst of tasks, and back to 1 once it has drained (see serve_app/capacity.py)."""

from __future__ import annotations

import time

import httpx
import pytest
from ray import serve

from serve_app import capacity
from tests.conftest import make_token
from tests.helpers import wait_until

pytestmark = pytest.mark.ray


def running_replicas(service: str) -> int:
    return int(serve.status().applications["labubu"].deployments[service].replica_states.get("RUNNING", 0))


def test_the_capacity_follower_counts_the_running_replicas_that_serve_status_shows(platform_url: str) -> None:
    # `capacity.running_replicas` reads the controller's details without `serve.status()`'s models;
    # both are read until they agree, in case the autoscaler acted between the two reads.
    def agree() -> bool:
        deployments = serve.status().applications["labubu"].deployments
        return capacity.running_replicas("labubu") == {name: running_replicas(name) for name in deployments}

    wait_until(agree, 30, "the running replicas to agree with serve.status()")
    counts = capacity.running_replicas("labubu")
    assert set(counts) >= {"ingress", "llm", "tts", "text2video"} and all(n >= 1 for n in counts.values()), counts


def test_backlog_scales_tts_up_and_back_down(platform_url: str) -> None:
    wait_until(lambda: running_replicas("tts") == 1, 60, "tts to settle at one replica")
    headers = {"Authorization": f"Bearer {make_token(tenant='scaler')}"}
    text = "This sentence is long enough to keep the speech model busy for a little while. " * 8
    with httpx.Client(base_url=platform_url, headers=headers, timeout=60) as client:
        tasks = [client.post("/v1/tasks", json={"service": "tts", "prompt": text}).json()["task_id"] for _ in range(24)]
        peak = 1
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            peak = max(peak, running_replicas("tts"))
            if peak >= 2:
                break
            statuses = [client.get(f"/v1/tasks/{task}").json()["status"] for task in tasks]
            if all(status == "completed" for status in statuses):
                break
            time.sleep(0.5)
        assert peak >= 2, "the backlog did not add a replica"
        # The backlog is drained by cancelling what is left of it (synthesising it all takes a minute).
        for task in tasks:
            client.post(f"/v1/tasks/{task}/cancel")
        ended = {"completed", "cancelled"}
        wait_until(
            lambda: all(client.get(f"/v1/tasks/{task}").json()["status"] in ended for task in tasks),
            300,
            "the tasks to end",
        )
    wait_until(lambda: running_replicas("tts") == 1, 90, "tts to scale back to one replica")
