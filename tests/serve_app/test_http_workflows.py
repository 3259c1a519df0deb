"""Workflows, tasks and uploads through HTTP on the running platform (SQLite and local artifacts).

The same executor against Redis and S3 is in tests/dag/test_executor_stores.py. What is refused at
the door (invalid workflows, bad uploads and media) is tested in-process, without Ray: tests/ingress/.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import ray

from deployments import media
from tests.conftest import make_token
from tests.helpers import client, llm, reported_methods, submit, wait_final, wait_node, wait_until

pytestmark = pytest.mark.ray

LONG_PROMPT = "word " * 5000  # more tokens than SmolLM2's context: the node fails, and not retryably


@pytest.fixture()
def http(platform_url: str) -> httpx.Client:
    with client(platform_url, f"wf-{uuid.uuid4().hex[:8]}") as session:
        yield session


def events(
    http: httpx.Client, workflow_id: str, kind: str = "workflows", **headers: str
) -> list[tuple[int, dict[str, Any]]]:
    found: list[tuple[int, dict[str, Any]]] = []
    with http.stream("GET", f"/v1/{kind}/{workflow_id}/events", headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in stream.iter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                found.append((event_id or 0, json.loads(line[6:])))
    return found


# ---------------------------------------------------------------- submission


def test_response_of_a_submission(http: httpx.Client) -> None:
    response = http.post(
        "/v1/workflows", json={"nodes": {"a": llm("Hi"), "b": llm("Then")}, "edges": [{"from": "a", "to": "b"}]}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["nodes"] == {"a": {"status": "pending"}, "b": {"status": "pending"}}
    assert wait_final(http, body["workflow_id"])["status"] == "completed"


def test_original_platform_body(platform_url: str) -> None:
    tenant = f"old-{uuid.uuid4().hex[:6]}"
    body = {
        "dag_id": f"dag-{uuid.uuid4().hex[:6]}",
        "tenant_id": tenant,
        "nodes": {"node1": {"service": "TTS"}, "node2": {"service": "STT"}},
        "edges": [{"from": "node1", "to": "node2", "prompt": "x"}],
        "inputs": {"node1": {"text": "Hello there."}},
    }
    with client(platform_url, tenant) as http:
        assert submit(http, body) == body["dag_id"]
        assert wait_final(http, body["dag_id"])["status"] == "completed"
        assert http.post("/v1/workflows", json=body).status_code == 409  # the same dag_id again
        assert (
            http.post("/v1/workflows", json={**body, "dag_id": "other", "tenant_id": "someone-else"}).status_code == 403
        )


# ---------------------------------------------------------------- running


def test_diamond_join_starts_after_both_parents(http: httpx.Client) -> None:
    body = {
        "nodes": {
            "a": llm("Name a fruit."),
            "b": llm("Its colour:", 16),
            "c": llm("Its taste:", 4),
            "d": llm("Summarise:"),
        },
        "edges": [
            {"from": "a", "to": "b"},
            {"from": "a", "to": "c"},
            {"from": "b", "to": "d"},
            {"from": "c", "to": "d"},
        ],
    }
    nodes = wait_final(http, submit(http, body))["nodes"]
    assert all(n["status"] == "completed" for n in nodes.values())
    assert nodes["d"]["started_at"] >= max(nodes["b"]["finished_at"], nodes["c"]["finished_at"])
    assert nodes["b"]["started_at"] >= nodes["a"]["finished_at"]


def test_fan_out_runs_in_parallel(http: httpx.Client) -> None:
    body = {
        "nodes": {
            "root": llm("Say a word."),
            "speak": {"service": "tts", "prompt": "Read this slowly and clearly, sentence by sentence: " * 4},
            "write": llm("Write a long story about the sea.", 48),
        },
        "edges": [{"from": "root", "to": "speak"}, {"from": "root", "to": "write"}],
    }
    nodes = wait_final(http, submit(http, body))["nodes"]
    speak, write = nodes["speak"], nodes["write"]
    assert speak["started_at"] < write["finished_at"] and write["started_at"] < speak["finished_at"]


def test_failure_skips_descendants_and_independent_branch_finishes(http: httpx.Client) -> None:
    body = {
        "nodes": {"bad": llm(LONG_PROMPT), "after": llm("Continue:"), "free": llm("Say yes.")},
        "edges": [{"from": "bad", "to": "after"}],
    }
    final = wait_final(http, submit(http, body))
    nodes = final["nodes"]
    assert final["status"] == "failed"
    assert nodes["bad"]["status"] == "failed" and "input_too_large" in nodes["bad"]["error"]
    assert nodes["bad"]["attempts"] == 1  # not retryable: no second attempt
    assert nodes["after"]["status"] == "skipped" and nodes["free"]["status"] == "completed"


def test_cancel_then_retry_keeps_completed_outputs(http: httpx.Client) -> None:
    body = {
        "nodes": {"first": llm("Say hello."), "slow": llm("Write a very long essay about rivers.", 200)},
        "edges": [{"from": "first", "to": "slow"}],
    }
    workflow_id = submit(http, body)
    wait_node(http, workflow_id, "slow", {"running"})
    first_output = http.get(f"/v1/workflows/{workflow_id}/outputs/first").content
    cancelled = http.post(f"/v1/workflows/{workflow_id}/cancel")
    assert cancelled.status_code == 202
    final = wait_final(http, workflow_id)
    assert final["status"] == "cancelled" and final["nodes"]["slow"]["status"] == "cancelled"
    assert final["nodes"]["first"]["status"] == "completed"
    assert http.post(f"/v1/workflows/{workflow_id}/cancel").status_code == 409

    retried = http.post(f"/v1/workflows/{workflow_id}/retry")
    assert retried.status_code == 202 and retried.json()["status"] in ("pending", "running")
    assert http.post(f"/v1/workflows/{workflow_id}/retry").status_code == 409
    final = wait_final(http, workflow_id, timeout_s=240)
    assert final["status"] == "completed"
    assert final["nodes"]["first"]["attempts"] == 1
    assert http.get(f"/v1/workflows/{workflow_id}/outputs/first").content == first_output
    assert http.post(f"/v1/workflows/{workflow_id}/retry").status_code == 409


def test_cancel_gives_back_the_grants_children_asked_for_early(platform_url: str) -> None:
    """A node asks for its children's grants when it completes (dag/executor.py); cancelled, the
    workflow leaves none behind: neither the running child's nor the one still queued for its turn."""
    tenant = f"wf-{uuid.uuid4().hex[:8]}"
    admin_headers = {"Authorization": f"Bearer {make_token(tenant='ops', role='admin')}"}
    with (
        httpx.Client(base_url=platform_url, headers=admin_headers, timeout=60) as admin,
        client(platform_url, tenant) as http,
    ):
        assert admin.put(f"/v1/admin/tenants/{tenant}", json={"max_concurrency": 1}).status_code == 200
        long = llm("Write a very long essay about rivers.", 200)
        body = {
            "nodes": {"first": llm("Say hello."), "left": long, "right": long},
            "edges": [{"from": "first", "to": "left"}, {"from": "first", "to": "right"}],
        }
        workflow_id = submit(http, body)
        deadline = time.monotonic() + 120
        while True:  # one child runs; the other is queued behind the tenant's one-call limit
            nodes = http.get(f"/v1/workflows/{workflow_id}").json()["nodes"]
            if sorted(nodes[n]["status"] for n in ("left", "right")) == ["queued", "running"]:
                break
            assert time.monotonic() < deadline, nodes
            time.sleep(0.05)
        assert http.post(f"/v1/workflows/{workflow_id}/cancel").status_code == 202
        assert wait_final(http, workflow_id)["status"] == "cancelled"

        def held() -> dict[str, int]:
            flow = admin.get("/v1/admin/scheduler").json()["services"]["llm"]["tenants"][tenant]
            return {"in_flight": flow["in_flight"], "queued": flow["queued"]}

        deadline = time.monotonic() + 10  # releases are fire-and-forget; a leaked grant would stay 30 s
        while held() != {"in_flight": 0, "queued": 0}:
            assert time.monotonic() < deadline, held()
            time.sleep(0.1)


def test_delete_removes_record_events_and_outputs(http: httpx.Client) -> None:
    workflow_id = submit(http, {"nodes": {"a": llm("Hi")}})
    wait_final(http, workflow_id)
    assert http.delete(f"/v1/workflows/{workflow_id}").status_code == 204
    for path in ["", "/events", "/outputs/a"]:
        assert http.get(f"/v1/workflows/{workflow_id}{path}").status_code == 404
    assert all(item["workflow_id"] != workflow_id for item in http.get("/v1/workflows").json()["items"])


# ---------------------------------------------------------------- events and outputs


def test_events_replay_and_resume_exactly(http: httpx.Client) -> None:
    workflow_id = submit(http, {"nodes": {"a": llm("Hi"), "b": llm("Then")}, "edges": [{"from": "a", "to": "b"}]})
    everything = events(http, workflow_id)  # follows live until the final event
    ids = [event_id for event_id, _ in everything]
    assert ids == list(range(1, len(ids) + 1))
    assert everything[0][1] == {"type": "workflow", "status": "pending"}
    assert everything[-1][1] == {"type": "workflow", "status": "completed"}
    assert events(http, workflow_id, **{"Last-Event-ID": "3"}) == everything[3:]
    with http.stream("GET", f"/v1/workflows/{workflow_id}/events?last_event_id={ids[-1]}") as stream:
        assert [line for line in stream.iter_lines() if line.startswith("data:")] == []


def test_event_log_follows_the_order_of_the_changes(http: httpx.Client) -> None:
    """The executor writes beside the work, not in its way; the log must still be in order."""
    chain = {
        "nodes": {n: llm("Say OK.", 2) for n in "abc"},
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    }
    workflow_id = submit(http, chain)
    log = [(e.get("node_id"), e["status"]) for _, e in events(http, workflow_id)]
    expected = [(None, "pending"), (None, "running")]
    expected += [(node, status) for node in "abc" for status in ("queued", "running", "completed")]
    assert log == [*expected, (None, "completed")]
    record = http.get(f"/v1/workflows/{workflow_id}").json()
    for node in "abc":  # each output was stored before its node was recorded completed
        output = http.get(f"/v1/workflows/{workflow_id}/outputs/{node}")
        assert output.status_code == 200 and len(output.content) == record["nodes"][node]["output"]["bytes"]


def test_outputs_in_each_format(http: httpx.Client) -> None:
    body = {
        "nodes": {
            "say": {"service": "tts", "prompt": "Hello."},
            "paint": {"service": "text2pic", "prompt": "a dot", "params": {"width": 64, "height": 64}},
        }
    }
    workflow_id = submit(http, body)
    nodes = wait_final(http, workflow_id)["nodes"]
    audio = http.get(f"/v1/workflows/{workflow_id}/outputs/say")
    assert audio.headers["content-type"] == "audio/wav" and media.wav_info(audio.content).seconds > 0.2
    assert len(audio.content) == nodes["say"]["output"]["bytes"]
    image = http.get(f"/v1/workflows/{workflow_id}/outputs/paint?format=json").json()
    assert image["content_type"] == "image/png" and image["data_b64"]
    assert http.get(f"/v1/workflows/{workflow_id}/outputs/paint?format=url").status_code == 400  # local artifacts


# ---------------------------------------------------------------- uploads and tasks


def test_upload_feeds_a_workflow(http: httpx.Client, platform_url: str) -> None:
    body = {"model": "tts", "input": "Good morning to you.", "response_format": "wav"}
    speech = http.post("/v1/audio/speech", json=body).content
    uploaded = http.put("/v1/uploads", content=speech, headers={"Content-Type": "audio/wav"})
    assert uploaded.status_code == 201 and uploaded.json()["bytes"] == len(speech)
    upload_id = uploaded.json()["upload_id"]
    workflow_id = submit(http, {"nodes": {"hear": {"service": "stt"}}, "inputs": {"hear": {"upload_id": upload_id}}})
    assert wait_final(http, workflow_id)["status"] == "completed"
    assert "morning" in http.get(f"/v1/workflows/{workflow_id}/outputs/hear").text.lower()
    with client(platform_url, "another-tenant") as other:  # someone else's upload id is unknown to them
        response = other.post(
            "/v1/workflows", json={"nodes": {"hear": {"service": "stt"}}, "inputs": {"hear": {"upload_id": upload_id}}}
        )
        assert response.status_code == 400


def test_task_lifecycle(http: httpx.Client) -> None:
    response = http.post("/v1/tasks", json={"service": "tts", "prompt": "One task.", "priority": "low"})
    assert response.status_code == 202 and response.json()["status"] == "pending"
    task_id = response.json()["task_id"]
    deadline = time.monotonic() + 60
    while (task := http.get(f"/v1/tasks/{task_id}").json())["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert task["service"] == "tts" and task["attempts"] == 1 and task["output"]["content_type"] == "audio/wav"
    assert http.get(f"/v1/tasks/{task_id}/output").headers["content-type"] == "audio/wav"
    assert [i["task_id"] for i in http.get("/v1/tasks?service=tts").json()["items"]] == [task_id]
    assert http.get("/v1/tasks?service=llm").json()["total"] == 0
    task_events = [data for _, data in events(http, task_id, kind="tasks")]
    assert task_events[0] == {"type": "workflow", "status": "pending"} and task_events[-1]["status"] == "completed"
    assert http.delete(f"/v1/tasks/{task_id}").status_code == 204
    assert http.get(f"/v1/tasks/{task_id}").status_code == 404


# ---------------------------------------------------------------- isolation and recovery


def test_another_tenant_sees_nothing(http: httpx.Client, platform_url: str) -> None:
    workflow_id = submit(http, {"nodes": {"a": llm("Hi")}})
    wait_final(http, workflow_id)
    with client(platform_url, "intruder") as other:
        for method, path in [
            ("GET", ""),
            ("GET", "/events"),
            ("GET", "/outputs/a"),
            ("POST", "/cancel"),
            ("POST", "/retry"),
            ("DELETE", ""),
        ]:
            response = other.request(method, f"/v1/workflows/{workflow_id}{path}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", (method, path)
        assert all(item["workflow_id"] != workflow_id for item in other.get("/v1/workflows").json()["items"])
        assert other.get(f"/v1/workflows/..%2F{workflow_id}").status_code == 404
    assert http.get(f"/v1/workflows/{workflow_id}").status_code == 200


def test_nodes_leave_no_task_event_but_the_executor_shows(http: httpx.Client) -> None:
    """The executor's node runs report no task events, which would grow the GCS under load; its own
    calls (`start`, `ping`) still do, for the dashboard. (An actor task's ID ends with its actor's.)"""
    executor = ray.get_actor("labubu-workflows", namespace="labubu")
    workflow_id = submit(http, {"nodes": {"a": llm("Hi"), "b": llm("Then")}, "edges": [{"from": "a", "to": "b"}]})
    assert wait_final(http, workflow_id)["status"] == "completed"
    assert ray.get(executor.ping.remote()) == "pong"  # last: once its event is in, the nodes' are too
    wait_until(lambda: "ping" in reported_methods(executor), timeout_s=20, what="the ping's task event", interval_s=0.5)
    assert "start" in reported_methods(executor) and "run_node" not in reported_methods(executor)


def test_workflow_survives_the_kill_of_its_executor(http: httpx.Client) -> None:
    body = {
        "nodes": {"first": llm("Say hello."), "second": llm("Write two sentences about snow.", 96)},
        "edges": [{"from": "first", "to": "second"}],
    }
    workflow_id = submit(http, body)
    wait_node(http, workflow_id, "second", {"queued", "running"})
    executor = ray.get_actor("labubu-workflows", namespace="labubu")
    ray.kill(executor, no_restart=False)
    final = wait_final(http, workflow_id, timeout_s=240)
    assert final["status"] == "completed"
    assert final["nodes"]["first"]["attempts"] == 1  # completed before the kill: not run again
    assert final["nodes"]["second"]["attempts"] >= 1
