"""Workflow records on both state stores: listing and resume read the indexes, which follow every
save and delete, and which a store written before they existed gets once, on first use."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from dag.records import (
    INDEXES_MARKER,
    META,
    WORKFLOWS,
    Status,
    WorkflowRecord,
    WorkflowStore,
    new_record,
    rfc3339,
)
from dag.spec import WorkflowSubmission
from dag.validate import plan_workflow
from state.artifacts import LocalArtifactStore
from state.store import StateStore

START = datetime(2026, 12, 1, tzinfo=timezone.utc)


def record(
    tenant: str, n: int, kind: str = "workflow", service: str = "llm", status: Status = Status.PENDING
) -> WorkflowRecord:
    plan = plan_workflow(WorkflowSubmission.model_validate({"nodes": {"a": {"service": service, "prompt": "Hi"}}}))
    made = new_record(tenant, f"{kind}-{n:03d}", kind, None, "default", plan, {})
    made.data["created_at"] = rfc3339(START + timedelta(seconds=n))
    made.data["status"] = status.value
    return made


def workflows(store: StateStore, tmp_path: Path) -> WorkflowStore:
    return WorkflowStore(store, LocalArtifactStore(tmp_path / "artifacts"))


def ids(records: list[WorkflowRecord]) -> list[str]:
    return [r.workflow_id for r in records]


def test_pages_newest_first_with_totals_per_tenant_kind_and_status(store: StateStore, tmp_path: Path) -> None:
    wfs = workflows(store, tmp_path)
    for n in range(5):
        wfs.save(record("acme", n))
    wfs.save(record("acme", 5, kind="task"))
    wfs.save(record("other", 6))
    page, total = wfs.page("acme", "workflow", limit=2)
    assert ids(page) == ["workflow-004", "workflow-003"] and total == 5
    page, total = wfs.page("acme", "workflow", offset=4, limit=2)
    assert ids(page) == ["workflow-000"] and total == 5
    assert ids(wfs.page("acme", "task")[0]) == ["task-005"]
    assert wfs.page("nobody", "workflow") == ([], 0)

    moved = wfs.get("acme", "workflow-002")
    moved.data["status"] = Status.COMPLETED.value
    wfs.save(moved, {"type": "workflow", "status": "completed"})
    page, total = wfs.page("acme", "workflow", status="completed")
    assert ids(page) == ["workflow-002"] and total == 1
    assert wfs.page("acme", "workflow", status="pending")[1] == 4
    assert wfs.page("acme", "workflow")[1] == 5  # moved, not added twice


def test_tasks_by_service_and_status(store: StateStore, tmp_path: Path) -> None:
    wfs = workflows(store, tmp_path)
    wfs.save(record("acme", 1, kind="task", service="tts"))
    wfs.save(record("acme", 2, kind="task", service="llm"))
    wfs.save(record("acme", 3, kind="task", service="tts", status=Status.FAILED))
    assert ids(wfs.page("acme", "task", service="tts")[0]) == ["task-003", "task-001"]
    assert ids(wfs.page("acme", "task", status="failed", service="tts")[0]) == ["task-003"]
    assert wfs.page("acme", "task", status="failed", service="llm") == ([], 0)
    assert wfs.page("acme", "task", service="stt") == ([], 0)


def test_unfinished_reads_only_what_has_not_ended(store: StateStore, tmp_path: Path) -> None:
    wfs = workflows(store, tmp_path)
    wfs.save(record("acme", 1, status=Status.RUNNING))
    wfs.save(record("acme", 2, status=Status.COMPLETED))
    wfs.save(record("other", 3))
    wfs.save(record("other", 4, kind="task", status=Status.CANCELLED))
    assert [r.key for r in wfs.unfinished()] == ["acme/workflow-001", "other/workflow-003"]
    done = wfs.get("acme", "workflow-001")
    done.data["status"] = Status.FAILED.value
    wfs.save(done)
    assert [r.key for r in wfs.unfinished()] == ["other/workflow-003"]
    retried = wfs.get("acme", "workflow-001")
    retried.data["status"] = Status.PENDING.value  # a retry makes it unfinished again
    wfs.save(retried)
    assert [r.key for r in wfs.unfinished()] == ["acme/workflow-001", "other/workflow-003"]


def test_delete_takes_the_record_out_of_every_index(store: StateStore, tmp_path: Path) -> None:
    wfs = workflows(store, tmp_path)
    wfs.save(record("acme", 1, kind="task", service="tts"), {"type": "workflow", "status": "pending"})
    wfs.delete(wfs.get("acme", "task-001"))
    assert wfs.unfinished() == []
    for status in (None, "pending"):
        for service in (None, "tts"):
            assert wfs.page("acme", "task", status=status, service=service) == ([], 0)


def test_a_store_written_before_the_indexes_is_indexed_once_on_first_use(store: StateStore, tmp_path: Path) -> None:
    old = [record("acme", n, status=Status.RUNNING if n == 3 else Status.COMPLETED) for n in range(4)]
    for made in old:  # as the previous version wrote them: documents only
        made.data["updated_at"] = made.data["created_at"]
        store.put(WORKFLOWS, made.key, made.data)
    wfs = workflows(store, tmp_path)
    page, total = wfs.page("acme", "workflow", limit=3)
    assert ids(page) == ["workflow-003", "workflow-002", "workflow-001"] and total == 4
    assert wfs.page("acme", "workflow", status="completed")[1] == 3
    assert [r.key for r in wfs.unfinished()] == ["acme/workflow-003"]
    assert store.get(META, INDEXES_MARKER) is not None

    # Once marked, a new store object does not scan again: a document written without its index
    # entry (which `save` never does) stays out of the listing.
    stray = record("acme", 9)
    store.put(WORKFLOWS, stray.key, stray.data)
    assert workflows(store, tmp_path).page("acme", "workflow")[1] == 4
