"""The executor's document saves: the changes made while a save runs merge into the next one, and
the event log still has every change, in order. In-process, on SQLite, without Ray."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from dag.config import ExecutorConfig
from dag.executor import WorkflowExecutor
from dag.records import WorkflowRecord, new_record
from dag.spec import WorkflowSubmission
from dag.validate import plan_workflow
from serve_app.settings import StoreLocation

NODES = [f"n{i}" for i in range(20)]


def wide_record() -> WorkflowRecord:
    spec = {"nodes": {node: {"service": "llm", "prompt": "Hi"} for node in NODES}}
    plan = plan_workflow(WorkflowSubmission.model_validate(spec))
    return new_record("acme", "wf-saves", "workflow", None, "low", plan, {})


async def test_changes_made_during_a_save_merge_into_the_next_one(tmp_path: Path) -> None:
    executor = WorkflowExecutor(StoreLocation(str(tmp_path)), None, ExecutorConfig(app_name="labubu"))
    executor.resumed.cancel()  # it resumes from inside a Ray actor only
    saves: list[int] = []  # the events each save wrote
    first_save_runs = threading.Event()
    store_save = executor.store.save

    def slow_save(record: WorkflowRecord, *events: dict[str, Any]) -> None:
        saves.append(len(events))
        first_save_runs.set()
        time.sleep(0.2)  # a slow store: every change below comes while this save runs
        store_save(record, *events)

    executor.store.save = slow_save  # type: ignore[method-assign]
    record = wide_record()
    executor._write(record, {"type": "workflow", "status": "running"})
    await asyncio.to_thread(first_save_runs.wait, 5)
    for node in NODES:
        record.node(node)["status"] = "queued"
        executor._write(record, {"type": "node", "node_id": node, "status": "queued"})
    for node in NODES:
        record.node(node)["status"] = "completed"
        last = executor._write(record, {"type": "node", "node_id": node, "status": "completed"})
    await last

    assert saves == [1, 2 * len(NODES)]  # two saves for 41 changes
    events = executor.store.state.read(record.key)
    assert [e.id for e in events] == list(range(1, 2 + 2 * len(NODES)))
    expected = [("queued", node) for node in NODES] + [("completed", node) for node in NODES]
    assert [(e.data["status"], e.data["node_id"]) for e in events[1:]] == expected
    stored = executor.store.find(record.key)
    assert stored is not None and {n["status"] for n in stored.data["nodes"].values()} == {"completed"}


async def test_a_failed_save_is_tried_again_with_the_document_its_events_describe(tmp_path: Path) -> None:
    executor = WorkflowExecutor(StoreLocation(str(tmp_path)), None, ExecutorConfig(app_name="labubu"))
    executor.resumed.cancel()
    first_try = threading.Event()
    later_change_made = threading.Event()
    written: list[tuple[str, list[str]]] = []  # (the document's status, the events' statuses) per save
    store_save = executor.store.save

    def failing_once(record: WorkflowRecord, *events: dict[str, Any]) -> None:
        if not first_try.is_set():
            first_try.set()
            later_change_made.wait(5)
            raise ConnectionError("the store restarts")  # as Redis refuses while it is down
        written.append((record.data["status"], [e["status"] for e in events]))
        store_save(record, *events)

    executor.store.save = failing_once  # type: ignore[method-assign]
    record = wide_record()
    record.data["status"] = "running"
    executor._write(record, {"type": "workflow", "status": "running"})
    await asyncio.to_thread(first_try.wait, 5)
    record.data["status"] = "completed"  # the workflow ends while its running save fails
    final = executor._write(record, {"type": "workflow", "status": "completed"})
    later_change_made.set()
    await final

    # The retry writes the document its event describes; the change made meanwhile goes with its event.
    assert written == [("running", ["running"]), ("completed", ["completed"])]
    events = executor.store.state.read(record.key)
    assert [e.data["status"] for e in events] == ["running", "completed"]
