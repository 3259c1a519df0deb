"""What several test modules share, in one place: no test module imports another.

- `wait_until`: poll a condition, failing (not hanging) when it never comes;
- `wait_restarted`: kill an actor and wait until Ray has restarted it;
- `record_connections`: refuse and record network connections, to show that code works offline;
- `claims`, `unsigned`: JWT claims, and a JWT with `alg: none`, for the auth attacks;
- `ScriptedBackend`: a model backend whose behaviour a test sets;
- workflows through HTTP on the running platform (`client`, `llm`, `submit`, `wait_final`,
  `wait_node`) and on an executor actor with stores of its own (`start_stored`,
  `wait_stored_final`);
- `realtime_text_turn`: one text turn over `/v1/realtime` with the official client.

Fixtures are in tests/conftest.py (the session's platform, and `store`: the state store, SQLite
and Redis), with `make_token` and `free_port`; what an error answer must look like is
tests/serve_app/contract.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from deployments.types import BackendFailure, InvalidInput, LLMChunk, LLMResult, ModelUnavailable
from tests.conftest import make_token


def wait_until(
    predicate: Callable[[], object], timeout_s: float = 20.0, what: str = "the condition", interval_s: float = 0.05
) -> None:
    """Return once `predicate()` is true; fail after `timeout_s` (a bound on a hang, not a measure)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)


def record_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The addresses that code tries to connect to from now on, refused at once: a test asserts
    on it that something works offline without trying the network."""
    attempts: list[object] = []

    def connect(sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"no network in this test (a connection to {address!r})")

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


# ---------------------------------------------------------------- auth


def claims(**overrides: object) -> dict[str, object]:
    """A JWT's claims of a user of `acme`, valid for ten minutes; an override of None removes a claim."""
    now = int(time.time())
    base: dict[str, object] = {"sub": "alice", "tenant": "acme", "exp": now + 600, **overrides}
    return {k: v for k, v in base.items() if v is not None}


def unsigned(payload: dict[str, object]) -> str:
    """A JWT with `alg: none` and no signature: every verifier must refuse it."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


# ---------------------------------------------------------------- backends


class ScriptedBackend:
    """A backend whose behaviour the test sets: fail, hang, refuse input, or answer."""

    def __init__(self, name: str, behaviour: str = "answer", loads: bool = True) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.behaviour = behaviour
        self.loads = loads
        self.calls = 0

    def load(self) -> None:
        if not self.loads:
            raise ModelUnavailable(f"{self.name} has no weights")

    async def run(self, request: Any) -> LLMResult:
        self.calls += 1
        if self.behaviour == "fail":
            raise BackendFailure("HTTP 500 from the provider")
        if self.behaviour == "crash":
            raise RuntimeError("engine crashed")
        if self.behaviour == "hang":
            await asyncio.sleep(60)
        if self.behaviour == "refuse":
            raise InvalidInput("bad input")
        return LLMResult(text=self.name, finish_reason="stop", prompt_tokens=1, completion_tokens=1)

    async def stream(self, request: Any) -> AsyncIterator[LLMChunk]:
        result = await self.run(request)
        yield LLMChunk(text=result.text, finish_reason="stop")


# ---------------------------------------------------------------- workflows through HTTP


def client(platform_url: str, tenant: str) -> httpx.Client:
    """An HTTP client of the running platform with a user token of `tenant`."""
    return httpx.Client(
        base_url=platform_url, headers={"Authorization": f"Bearer {make_token(tenant=tenant)}"}, timeout=120
    )


def llm(prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    """An `llm` node (or task body) that answers deterministically."""
    return {"service": "llm", "prompt": prompt, "params": {"max_tokens": max_tokens, "temperature": 0}}


def submit(http: httpx.Client, body: dict[str, Any]) -> str:
    """Submit a workflow, which must be accepted; its id."""
    response = http.post("/v1/workflows", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["workflow_id"])


def wait_final(http: httpx.Client, workflow_id: str, timeout_s: float = 180) -> dict[str, Any]:
    """The workflow once it has ended (completed, failed or cancelled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = http.get(f"/v1/workflows/{workflow_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def wait_node(http: httpx.Client, workflow_id: str, node: str, statuses: set[str], timeout_s: float = 120) -> None:
    """Return once the node's status is one of `statuses`."""
    deadline = time.monotonic() + timeout_s
    while http.get(f"/v1/workflows/{workflow_id}").json()["nodes"][node]["status"] not in statuses:
        assert time.monotonic() < deadline
        time.sleep(0.1)


# ---------------------------------------------------------------- workflows on an executor actor


def start_stored(store: Any, executor: Any, body: dict[str, Any], tenant: str = "acme") -> str:
    """Save a workflow of `body` in the executor's `WorkflowStore` and start it there; its key."""
    import ray

    from dag.records import new_record
    from dag.spec import WorkflowSubmission
    from dag.validate import plan_workflow

    plan = plan_workflow(WorkflowSubmission.model_validate(body))
    record = new_record(tenant, f"wf_{uuid.uuid4().hex[:12]}", "workflow", None, "default", plan, {})
    store.save(record, {"type": "workflow", "status": "pending"})
    ray.get(executor.start.remote(record.key))
    return str(record.key)


def wait_stored_final(store: Any, key: str, timeout_s: float = 240) -> dict[str, Any]:
    """The stored workflow's data once it has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = store.find(key)
        assert record is not None
        if record.status.final:
            return dict(record.data)
        assert time.monotonic() < deadline, record.data["nodes"]
        time.sleep(0.2)


def reported_methods(actor: Any) -> set[str]:
    """The methods of `actor` that left task events in the GCS (what the dashboard lists). An actor
    task's ID ends with its actor's ID."""
    import ray

    actor_id = actor._actor_id.hex()
    return {
        event["name"]
        for event in ray.timeline()
        if event.get("cat", "").startswith("task::") and event["args"]["task_id"].endswith(actor_id)
    }


def assert_lowest_priority(pool: Any) -> None:
    """The threads of `pool` (a ThreadPoolExecutor) run under SCHED_IDLE at nice 19; the caller's do not."""
    threads = list(pool._threads)
    assert threads and all(os.getpriority(os.PRIO_PROCESS, t.native_id) == 19 for t in threads if t.native_id)
    assert all(os.sched_getscheduler(t.native_id) == os.SCHED_IDLE for t in threads if t.native_id)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19


def actor_pid(actor: Any) -> int | None:
    """The actor's process, or None while it is being restarted."""
    import ray

    try:
        return int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=5))
    except ray.exceptions.RayError:
        return None


def wait_restarted(actor: Any, timeout_s: float = 60.0) -> None:
    """Kill the actor's process and return once Ray has started its successor (a new process)."""
    import ray

    before = actor_pid(actor)
    ray.kill(actor, no_restart=False)
    wait_until(lambda: actor_pid(actor) not in (None, before), timeout_s, "the actor's restart", interval_s=0.2)


def realtime_text_turn(openai_client: Any, text: str, max_output_tokens: int = 16) -> str:
    """One text-only turn over `/v1/realtime` with the official client's `realtime.connect`: the
    answer's text, once its `response.done` says it completed."""
    with openai_client.realtime.connect(model="llm") as connection:
        connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        connection.conversation.item.create(item=item)
        connection.response.create(response={"max_output_tokens": max_output_tokens})
        answer = ""
        for event in connection:
            if event.type == "response.output_text.delta":
                answer += event.delta
            if event.type == "response.done":
                assert event.response.status == "completed"
                return answer
    raise AssertionError("the realtime session ended before response.done")
