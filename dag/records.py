"""Durable workflow records: the document of each workflow, its event log and its artifacts.

One JSON document per workflow (namespace `workflows`, key `<tenant>/<workflow_id>`) holds the
spec, the workflow's status and each node's; the event log (stream `<tenant>/<workflow_id>`) is
append-only; inputs and outputs are artifacts under `<tenant>/<workflow_id>/`. Nothing expires on
its own: `delete` removes all three.

Listings and resume read secondary indexes of the state store (sorted sets of document keys by
creation time), written with each document in one step: a tenant's workflows (or tasks), the same
by status, tasks by service (and status), and the unfinished workflows of every tenant. Stores
written before the indexes existed are indexed once, on first use (`ensure_indexed`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any
from urllib.parse import quote

from dag.errors import WorkflowNotFound
from dag.validate import PlannedEdge, PlannedNode, WorkflowPlan
from modalities.base import Output
from state.artifacts import ArtifactStore
from state.store import IndexEntry, StateStore

WORKFLOWS = "workflows"
UPLOADS = "uploads"
# The marker document that says the workflow indexes cover every document (see `ensure_indexed`).
META = "meta"
INDEXES_MARKER = "workflow-indexes"
INDEXES_VERSION = 1
UNFINISHED_INDEX = "workflows/unfinished"


class Status(str, Enum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.SKIPPED)


def rfc3339(moment: datetime) -> str:
    """An aware datetime as API.md writes timestamps: UTC, milliseconds, `Z`."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))


def workflow_key(tenant: str, workflow_id: str) -> str:
    return f"{tenant}/{workflow_id}"


def node_segment(node_id: str) -> str:
    # Node ids may be "." or "..": prefixed, they are safe as a path segment of an artifact key.
    return f"n-{node_id}"


def output_key(tenant: str, workflow_id: str, node_id: str) -> str:
    return f"{tenant}/{workflow_id}/outputs/{node_segment(node_id)}"


def input_key(tenant: str, workflow_id: str, node_id: str) -> str:
    return f"{tenant}/{workflow_id}/inputs/{node_segment(node_id)}"


def upload_key(tenant: str, upload_id: str) -> str:
    return f"{tenant}/uploads/{upload_id}"


def list_index(tenant: str, kind: str, status: str | None = None, service: str | None = None) -> str:
    """The index of a tenant's workflows (or tasks) newest first, narrowed to a status and, for
    tasks, a service. The tenant is quoted: no tenant name can reach into another's indexes."""
    name = f"workflows/{kind}/{quote(tenant, safe='')}"
    if service is not None:
        name += f"/service/{quote(service, safe='')}"
    if status is not None:
        name += f"/status/{status}"
    return name


@dataclass
class WorkflowRecord:
    """The document of one workflow, as stored."""

    data: dict[str, Any]

    @property
    def key(self) -> str:
        return workflow_key(self.tenant, self.workflow_id)

    @property
    def tenant(self) -> str:
        return str(self.data["tenant"])

    @property
    def workflow_id(self) -> str:
        return str(self.data["workflow_id"])

    @property
    def status(self) -> Status:
        return Status(self.data["status"])

    @property
    def priority(self) -> str:
        return str(self.data.get("priority", "default"))

    def snapshot(self) -> WorkflowRecord:
        """A deep copy, for a writer that stores it later while this one keeps changing."""
        return WorkflowRecord(json.loads(json.dumps(self.data)))

    def node(self, node_id: str) -> dict[str, Any]:
        node: dict[str, Any] = self.data["nodes"][node_id]
        return node

    def plan(self) -> WorkflowPlan:
        """The validated plan stored at submission (no re-validation: it passed once)."""
        spec = self.data["spec"]
        nodes = {
            node_id: PlannedNode(node_id, node["service"], node["prompt"], node["params"])
            for node_id, node in spec["nodes"].items()
        }
        edges = [PlannedEdge(e["from"], e["to"], e["prompt"]) for e in spec["edges"]]
        return WorkflowPlan(nodes, edges, spec["order"])

    def public(self, with_nodes: bool = True) -> dict[str, Any]:
        """The API's view of the workflow (GET /v1/workflows/{id})."""
        body: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "name": self.data.get("name"),
            "status": self.data["status"],
            "created_at": self.data["created_at"],
            "updated_at": self.data["updated_at"],
        }
        if with_nodes:
            body["nodes"] = {
                node_id: {k: v for k, v in node.items() if k != "output_key"}
                for node_id, node in self.data["nodes"].items()
            }
        return body

    @property
    def unfinished(self) -> bool:
        """Not yet ended: what a restarted executor resumes."""
        return self.status in (Status.PENDING, Status.RUNNING)

    def index_entry(self) -> IndexEntry:
        """Where the record belongs in the listing indexes (by creation time), and where it does not."""
        tenant, kind, status = self.tenant, str(self.data.get("kind", "workflow")), self.data["status"]
        created = datetime.fromisoformat(self.data["created_at"]).timestamp()
        services: list[str | None] = [None]
        if kind == "task":
            services.append(next(iter(self.data["nodes"].values()))["service"])
        scores: dict[str, float] = {}
        absent: list[str] = []
        for service in services:
            scores[list_index(tenant, kind, service=service)] = created
            scores[list_index(tenant, kind, status, service)] = created
            absent += [list_index(tenant, kind, other.value, service) for other in Status if other.value != status]
        if self.unfinished:
            scores[UNFINISHED_INDEX] = created
        else:
            absent.append(UNFINISHED_INDEX)
        return IndexEntry(self.key, scores, tuple(absent))

    def public_task(self) -> dict[str, Any]:
        """The API's view of a task (a one-node workflow)."""
        node = next(iter(self.data["nodes"].values()))
        return {
            "task_id": self.workflow_id,
            "service": node["service"],
            "status": self.data["status"],
            "attempts": node["attempts"],
            "error": node["error"],
            "created_at": self.data["created_at"],
            "updated_at": self.data["updated_at"],
            "output": node["output"],
            # When the call ran; a long call's steps (0-100) and what it made (a video's size and length).
            **{k: node[k] for k in ("started_at", "finished_at", "progress", "result") if k in node},
        }


def new_record(
    tenant: str,
    workflow_id: str,
    kind: str,
    name: str | None,
    priority: str,
    plan: WorkflowPlan,
    inputs: dict[str, dict[str, Any]],
) -> WorkflowRecord:
    created = now_rfc3339()
    spec = {
        "nodes": {n.id: {"service": n.service, "prompt": n.prompt, "params": n.params} for n in plan.nodes.values()},
        "edges": [{"from": e.source, "to": e.target, "prompt": e.prompt} for e in plan.edges],
        "order": plan.order,
        "inputs": inputs,
    }
    nodes = {
        n.id: {
            "service": n.service,
            "status": Status.PENDING.value,
            "attempts": 0,
            "error": None,
            "started_at": None,
            "finished_at": None,
            "output": None,
        }
        for n in plan.nodes.values()
    }
    return WorkflowRecord(
        {
            "workflow_id": workflow_id,
            "tenant": tenant,
            "kind": kind,
            "name": name,
            "priority": priority,
            "status": Status.PENDING.value,
            "created_at": created,
            "updated_at": created,
            "cancel_requested": False,
            "spec": spec,
            "nodes": nodes,
        }
    )


class WorkflowStore:
    """Workflow documents, events and artifacts, over the state and artifact stores."""

    def __init__(self, state: StateStore, artifacts: ArtifactStore) -> None:
        self.state = state
        self.artifacts = artifacts
        self._indexed = False
        self._indexing = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_indexing"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._indexing = threading.Lock()

    def ensure_indexed(self) -> None:
        """Index the documents of a store written before the indexes existed, once per store (a
        marker document says it is done; until then, every process that opens the store tries, and
        indexing twice is harmless). Documents saved since are indexed by `save` itself."""
        if self._indexed:
            return
        with self._indexing:
            if self._indexed:
                return
            marker = self.state.get(META, INDEXES_MARKER)
            if marker is None or marker.get("version", 0) < INDEXES_VERSION:
                self.state.reindex(WORKFLOWS, lambda _, data: WorkflowRecord(data).index_entry())
                self.state.put(META, INDEXES_MARKER, {"version": INDEXES_VERSION})
            self._indexed = True

    def get(self, tenant: str, workflow_id: str) -> WorkflowRecord:
        data = self.state.get(WORKFLOWS, workflow_key(tenant, workflow_id))
        if data is None:
            raise WorkflowNotFound(f"workflow {workflow_id!r} does not exist")
        return WorkflowRecord(data)

    def find(self, key: str) -> WorkflowRecord | None:
        data = self.state.get(WORKFLOWS, key)
        return WorkflowRecord(data) if data is not None else None

    def exists(self, tenant: str, workflow_id: str) -> bool:
        return self.state.get(WORKFLOWS, workflow_key(tenant, workflow_id)) is not None

    def save(self, record: WorkflowRecord, *events: dict[str, Any]) -> None:
        """Store the document, its index entries and (in the same step) events of its log."""
        self.ensure_indexed()
        record.data["updated_at"] = now_rfc3339()
        if not events:
            self.state.put(WORKFLOWS, record.key, record.data, record.index_entry())
        else:
            self.state.put_and_append(WORKFLOWS, record.key, record.data, record.key, events, record.index_entry())

    def save_many(self, records: list[WorkflowRecord]) -> None:
        """Store many documents with their index entries in one step, without events: bulk loads."""
        self.ensure_indexed()
        self.state.put_many(WORKFLOWS, [(r.key, r.data, r.index_entry()) for r in records])

    def page(
        self,
        tenant: str,
        kind: str,
        status: str | None = None,
        service: str | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[list[WorkflowRecord], int]:
        """One page of the tenant's workflows (or tasks), newest first, and how many there are in
        all: one page of keys from an index, then only those documents."""
        self.ensure_indexed()
        index = list_index(tenant, kind, status, service)
        keys = self.state.index_page(index, offset, limit)
        found = self.state.get_many(WORKFLOWS, keys)
        # A key whose document went between the two reads (a delete) is skipped.
        return [WorkflowRecord(data) for data in found if data is not None], self.state.index_count(index)

    def unfinished(self) -> list[WorkflowRecord]:
        """Every workflow of every tenant that has not ended, oldest first: what a restarted
        executor resumes. It reads the unfinished index, never the finished history."""
        self.ensure_indexed()
        keys = self.state.index_page(UNFINISHED_INDEX, 0, self.state.index_count(UNFINISHED_INDEX), newest_first=False)
        records = [WorkflowRecord(data) for data in self.state.get_many(WORKFLOWS, keys) if data is not None]
        return [r for r in records if r.unfinished]

    def put_output(self, record: WorkflowRecord, node_id: str, output: Output) -> dict[str, Any]:
        key = output_key(record.tenant, record.workflow_id, node_id)
        info = self.artifacts.put(key, output.data, output.content_type)
        return {"content_type": info.content_type, "bytes": info.bytes}

    def get_output(self, record: WorkflowRecord, node_id: str) -> Output:
        data, content_type = self.artifacts.get(output_key(record.tenant, record.workflow_id, node_id))
        return Output(data, content_type)

    def get_input(self, record: WorkflowRecord, node_id: str) -> str | Output | None:
        """A node's own input: text kept in the spec, media kept as an artifact (or an upload)."""
        spec = record.data["spec"]["inputs"].get(node_id)
        if spec is None:
            return None
        if "text" in spec:
            return str(spec["text"])
        data, content_type = self.artifacts.get(spec["artifact"])
        return Output(data, content_type)

    def delete(self, record: WorkflowRecord) -> None:
        self.artifacts.delete_prefix(f"{record.tenant}/{record.workflow_id}")
        self.state.delete_stream(record.key)
        self.state.delete(WORKFLOWS, record.key, record.index_entry())
