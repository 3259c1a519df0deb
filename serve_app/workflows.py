"""Submitting workflows and tasks: validation, ids, inputs into the artifact store, the first event.

Shared by the workflow and task routes; the executor actor does the running.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from typing import Any

from dag.errors import InvalidWorkflow, WorkflowConflict
from dag.records import UPLOADS, Status, WorkflowRecord, input_key, new_record, upload_key
from dag.spec import WorkflowSubmission
from dag.validate import plan_workflow
from modalities.base import TEXT, VECTOR, Output, kind_of
from serve_app.auth import Principal
from serve_app.errors import ApiError
from serve_app.platform import Platform

WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


def check_tenant_field(tenant_id: str | None, principal: Principal) -> None:
    """A body's `tenant_id` must be the token's tenant, if given at all."""
    if tenant_id is not None and tenant_id != principal.tenant:
        raise ApiError(403, "forbidden", "`tenant_id` differs from the token's tenant")


async def resolve_uploads(platform: Platform, submission: WorkflowSubmission, tenant: str) -> dict[str, Output]:
    """The caller's uploads that the submission names (a missing or foreign one is simply absent)."""
    # An id that could not be ours (`../x`) is never looked up: the store's keys are paths.
    ids = sorted({spec.upload_id for spec in submission.inputs.values() if spec.upload_id and _safe_id(spec.upload_id)})

    def load(upload_id: str) -> Output | None:
        if platform.store.get(UPLOADS, f"{tenant}/{upload_id}") is None:
            return None
        data, content_type = platform.workflows.artifacts.get(upload_key(tenant, upload_id))
        return Output(data, content_type)

    found = await asyncio.gather(*(asyncio.to_thread(load, upload_id) for upload_id in ids))
    return {upload_id: output for upload_id, output in zip(ids, found, strict=True) if output is not None}


def _safe_id(value: str) -> bool:
    return bool(WORKFLOW_ID.match(value))


async def submit(platform: Platform, submission: WorkflowSubmission, principal: Principal, kind: str) -> WorkflowRecord:
    """Validate, store and start a workflow (or task); its record, status `pending`."""
    check_tenant_field(submission.tenant_id, principal)
    uploads = await resolve_uploads(platform, submission, principal.tenant)
    plan = plan_workflow(
        submission,
        resolve_upload=uploads.get,
        max_nodes=platform.settings.max_nodes,
        params_context=platform.params_context,
    )
    await platform.scheduler.call("check_room", principal.tenant)  # 429 when its queue is full

    prefix = "task" if kind == "task" else "wf"
    workflow_id = submission.dag_id or f"{prefix}_{uuid.uuid4().hex[:20]}"
    if not _safe_id(workflow_id):
        raise InvalidWorkflow("`dag_id` must be 1 to 64 letters, digits, `_`, `.` or `-`", [{"field": "dag_id"}])
    if await asyncio.to_thread(platform.workflows.exists, principal.tenant, workflow_id):
        raise WorkflowConflict(f"this tenant already has a workflow {workflow_id!r}")

    inputs: dict[str, dict[str, Any]] = {}
    for node_id, spec in submission.inputs.items():
        value = plan.nodes[node_id].input
        if isinstance(value, str):
            inputs[node_id] = {"text": value}
        elif spec.upload_id is not None:
            inputs[node_id] = {"artifact": upload_key(principal.tenant, spec.upload_id)}
        elif isinstance(value, Output):
            key = input_key(principal.tenant, workflow_id, node_id)
            await asyncio.to_thread(platform.workflows.artifacts.put, key, value.data, value.content_type)
            inputs[node_id] = {"artifact": key}

    record = new_record(principal.tenant, workflow_id, kind, submission.name, submission.priority, plan, inputs)
    await asyncio.to_thread(platform.workflows.save, record, {"type": "workflow", "status": Status.PENDING.value})
    platform.executor.start.remote(record.key)  # the record is durable: a lost call is resumed on restart
    return record


def encode_output(data: bytes, content_type: str) -> dict[str, Any]:
    if kind_of(content_type) in (TEXT, VECTOR):
        return {"content_type": content_type, "text": data.decode("utf-8")}
    return {"content_type": content_type, "data_b64": base64.b64encode(data).decode()}
