"""Durable workflow records: the document of each workflow, its event log and its artifacts.

One JSON document per workflow (namespace `workflows`, key `<tenant>/<workflow_id>`) holds the
spec, the workflow's status and each node's; the event log (stream `<tenant>/<workflow_id>`) is
append-only; inputs and outputs are artifacts under `<tenant>/<workflow_id>/`. Nothing expires on
its own: `delete` removes all three.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from dag.compose import Output
from dag.errors import WorkflowNotFound
from dag.validate import PlannedEdge, PlannedNode, WorkflowPlan
from state.artifacts import ArtifactStore
from state.store import StateStore

WORKFLOWS = "workflows"
UPLOADS = "uploads"


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
        return self.data["nodes"][node_id]  # type: ignore[no-any-return]

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

    def save(self, record: WorkflowRecord, event: dict[str, Any] | None = None) -> None:
        """Store the document, and with it (in the same step) an event of its log."""
        record.data["updated_at"] = now_rfc3339()
        if event is None:
            self.state.put(WORKFLOWS, record.key, record.data)
        else:
            self.state.put_and_append(WORKFLOWS, record.key, record.data, record.key, event)

    def of_tenant(self, tenant: str, kind: str) -> list[WorkflowRecord]:
        """The tenant's workflows (or tasks), newest first."""
        records = [WorkflowRecord(data) for _, data in self.state.items(WORKFLOWS, f"{tenant}/")]
        chosen = [r for r in records if r.data.get("kind") == kind]
        return sorted(chosen, key=lambda r: (r.data["created_at"], r.workflow_id), reverse=True)

    def unfinished(self) -> list[WorkflowRecord]:
        """Every workflow of every tenant that has not ended: what a restarted executor resumes."""
        records = [WorkflowRecord(data) for _, data in self.state.items(WORKFLOWS)]
        return [r for r in records if r.status in (Status.PENDING, Status.RUNNING)]

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
        self.state.delete(WORKFLOWS, record.key)
