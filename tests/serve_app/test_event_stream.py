"""The event stream's generator on real stores, without HTTP: how and when a stream ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

from dag.records import WorkflowRecord, WorkflowStore, new_record
from dag.spec import WorkflowSubmission
from dag.validate import plan_workflow
from serve_app.routes.workflows import event_stream
from serve_app.settings import Settings
from state.artifacts import LocalArtifactStore
from state.store import SqliteStore


def waiting_workflow(tmp_path: Path) -> tuple[WorkflowStore, WorkflowRecord]:
    store = WorkflowStore(SqliteStore(tmp_path / "state.sqlite3"), LocalArtifactStore(tmp_path / "artifacts"))
    plan = plan_workflow(WorkflowSubmission.model_validate({"nodes": {"a": {"service": "llm", "prompt": "Hi"}}}))
    record = new_record("acme", "wf_waiting", "workflow", None, "default", plan, {})
    store.save(record, {"type": "workflow", "status": "pending"})
    return store, record


async def test_the_stream_of_a_workflow_that_waits_ends_after_events_max_s(tmp_path: Path) -> None:
    """A client never holds a connection for ever: it reconnects with Last-Event-ID instead."""
    store, record = waiting_workflow(tmp_path)
    platform = SimpleNamespace(workflows=store, settings=Settings.load({"events_max_s": 0.6}, env={}))

    async def stream() -> list[str]:
        return [chunk async for chunk in event_stream(platform, record, 0)]  # type: ignore[arg-type]

    # The workflow still waits and still exists, so only `events_max_s` can end the stream; the
    # timeout only turns a stream that never ends into a failure.
    chunks = await asyncio.wait_for(stream(), timeout=30)
    assert chunks == [f"id: 1\ndata: {json.dumps({'type': 'workflow', 'status': 'pending'})}\n\n"]

    # Resumed after the last id it saw, the client gets what came since, and nothing twice.
    store.save(record, {"type": "workflow", "status": "running"})
    resumed = [chunk async for chunk in event_stream(platform, record, 1)]  # type: ignore[arg-type]
    assert resumed == [f"id: 2\ndata: {json.dumps({'type': 'workflow', 'status': 'running'})}\n\n"]


async def test_a_waiting_stream_wakes_on_the_next_event_and_ends_after_the_final_one(tmp_path: Path) -> None:
    """No poll brings the events: the store's fallback poll is a minute, the ping 15 s, and yet
    the stream delivers each event as it is saved and ends right after the final one."""
    store, record = waiting_workflow(tmp_path)
    store = WorkflowStore(SqliteStore(tmp_path / "state.sqlite3", poll_s=60), store.artifacts)
    platform = SimpleNamespace(workflows=store, settings=Settings.load({"events_max_s": 600}, env={}))
    received: list[str] = []

    async def follow() -> None:
        async for chunk in event_stream(platform, record, 0):  # type: ignore[arg-type]
            received.append(chunk)

    following = asyncio.create_task(follow())
    while not received:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # now it waits
    record.data["status"] = "running"
    await asyncio.to_thread(store.save, record, {"type": "workflow", "status": "running"})
    record.data["status"] = "completed"
    await asyncio.to_thread(store.save, record, {"type": "workflow", "status": "completed"})
    await asyncio.wait_for(following, timeout=10)
    assert [json.loads(chunk.split("data: ")[1])["status"] for chunk in received] == ["pending", "running", "completed"]
