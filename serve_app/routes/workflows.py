"""Workflows, tasks (one-node workflows) and uploads: the asynchronous half of the API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dag.errors import WorkflowNotFound
from dag.records import UPLOADS, Status, WorkflowRecord, output_key, upload_key, workflow_key
from dag.spec import TaskSubmission, WorkflowSubmission
from deployments import media
from deployments.types import InvalidInput
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError
from serve_app.platform import Platform
from serve_app.workflows import WORKFLOW_ID, encode_output, submit

router = APIRouter(prefix="/v1", tags=["workflows"], responses=ERROR_RESPONSES)

IdPath = Annotated[str, Path(max_length=64)]
StatusFilter = Literal["pending", "running", "completed", "failed", "cancelled"]
UPLOAD_TYPES = {"audio/wav", "audio/x-wav", "image/png", "image/jpeg", "text/plain"}
# Event ids are 64-bit integers in the stores: a larger one cannot name an event.
MAX_EVENT_ID = 2**63 - 1
PING_INTERVAL_S = 15.0
FINAL = {Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value}


async def load(platform: Platform, principal: Principal, workflow_id: str, kind: str) -> WorkflowRecord:
    """The caller's workflow (or task); another tenant's is exactly as absent as a missing one."""
    what = "task" if kind == "task" else "workflow"
    if not WORKFLOW_ID.match(workflow_id):
        raise WorkflowNotFound(f"{what} {workflow_id!r} does not exist")
    record = await asyncio.to_thread(platform.workflows.find, workflow_key(principal.tenant, workflow_id))
    if record is None or record.data.get("kind") != kind:
        raise WorkflowNotFound(f"{what} {workflow_id!r} does not exist")
    return record


async def event_stream(platform: Platform, record: WorkflowRecord, after: int) -> AsyncIterator[str]:
    """The workflow's event log from `after`, then live; it ends after the workflow's final event,
    or after `events_max_s` (a workflow that waits for hours, a client that never leaves), when the
    client resumes with Last-Event-ID."""
    store = platform.workflows
    clock = asyncio.get_running_loop().time
    last = after
    previous = await asyncio.to_thread(store.state.read, record.key, after - 1, 1) if after > 0 else []
    last_data: dict[str, Any] | None = previous[0].data if previous else None
    deadline = clock() + platform.settings.events_max_s
    ping_at = clock() + PING_INTERVAL_S
    events = await asyncio.to_thread(store.state.read, record.key, last, 500)
    while True:
        for event in events:
            yield f"id: {event.id}\ndata: {json.dumps(event.data)}\n\n"
            last, last_data = event.id, event.data
        if events:
            ping_at = clock() + PING_INTERVAL_S
        else:
            if last_data and last_data.get("type") == "workflow" and last_data.get("status") in FINAL:
                current = await asyncio.to_thread(store.find, record.key)
                if current is None or current.status.final:
                    return
            if await asyncio.to_thread(store.find, record.key) is None:
                return  # deleted while we watched
            if clock() >= deadline:
                return
            if clock() >= ping_at:
                ping_at = clock() + PING_INTERVAL_S
                yield ": ping\n\n"
        # After events, look again at once (the final one may have come); else sleep until the next
        # append wakes us (no polling), or a ping or the deadline is due.
        wait_s = 0.0 if events else max(0.0, min(deadline, ping_at) - clock())
        events = await store.state.next_events(record.key, last, wait_s, 500)


def events_response(
    platform: Platform, record: WorkflowRecord, header_id: str | None, query_id: int | None
) -> Response:
    after = query_id if query_id is not None else 0
    if header_id:
        try:
            after = int(header_id)
        except ValueError:
            raise ApiError(422, "validation_error", "Last-Event-ID must be an integer") from None
    if not 0 <= after <= MAX_EVENT_ID:
        raise ApiError(422, "validation_error", f"Last-Event-ID must be between 0 and {MAX_EVENT_ID}")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(event_stream(platform, record, after), media_type="text/event-stream", headers=headers)


async def output_response(platform: Platform, record: WorkflowRecord, node_id: str, format: str | None) -> Response:
    node = record.data["nodes"].get(node_id)
    if node is None or node.get("output") is None:
        raise ApiError(404, "not_found", f"node {node_id!r} has no output (yet)")
    output = await asyncio.to_thread(platform.workflows.get_output, record, node_id)
    if format == "json":
        return JSONResponse(encode_output(output.data, output.content_type))
    if format == "url":
        url = await asyncio.to_thread(
            platform.workflows.artifacts.url, output_key(record.tenant, record.workflow_id, node_id)
        )
        if url is None:
            raise ApiError(400, "invalid_input", "presigned URLs need the S3 artifact store (LABUBU_S3_BUCKET)")
        return JSONResponse({"content_type": output.content_type, "url": url})
    return Response(content=output.data, media_type=output.content_type)


async def act(platform: Platform, principal: Principal, workflow_id: str, kind: str, method: str) -> WorkflowRecord:
    """Cancel, retry or delete through the executor (409 when the state forbids it); the record after."""
    record = await load(platform, principal, workflow_id, kind)
    await platform.executor_call(method, record.key)
    return record if method == "delete" else await load(platform, principal, workflow_id, kind)


async def page(
    platform: Platform,
    principal: Principal,
    kind: str,
    view: Callable[[WorkflowRecord], dict[str, Any]],
    status: str | None,
    limit: int,
    offset: int,
    service: str | None = None,
) -> dict[str, Any]:
    """One page of the tenant's workflows or tasks, newest first, read from the store's indexes."""
    records, total = await asyncio.to_thread(
        platform.workflows.page, principal.tenant, kind, status, service, offset, limit
    )
    return {"items": [view(r) for r in records], "total": total}


# ---------------------------------------------------------------- workflows


@router.post("/workflows", status_code=202, summary="Submit a workflow (an agent DAG)")
async def submit_workflow(
    body: WorkflowSubmission,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    record = await submit(platform, body, principal, "workflow")
    nodes = {node_id: {"status": "pending"} for node_id in record.data["nodes"]}
    return JSONResponse({"workflow_id": record.workflow_id, "status": "pending", "nodes": nodes}, status_code=202)


@router.get("/workflows", summary="The tenant's workflows, newest first")
async def list_workflows(
    status: StatusFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    summary = partial(WorkflowRecord.public, with_nodes=False)
    return JSONResponse(await page(platform, principal, "workflow", summary, status, limit, offset))


@router.get("/workflows/{workflow_id}", summary="A workflow with its nodes")
async def get_workflow(
    workflow_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    return JSONResponse((await load(platform, principal, workflow_id, "workflow")).public())


@router.get("/workflows/{workflow_id}/events", summary="The workflow's events as server-sent events")
async def workflow_events(
    workflow_id: IdPath,
    last_event_id: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None,
    last_event_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    record = await load(platform, principal, workflow_id, "workflow")
    return events_response(platform, record, last_event_header, last_event_id)


@router.get("/workflows/{workflow_id}/outputs/{node_id}", summary="A node's output")
async def workflow_output(
    workflow_id: IdPath,
    node_id: IdPath,
    format: Literal["json", "url"] | None = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    record = await load(platform, principal, workflow_id, "workflow")
    return await output_response(platform, record, node_id, format)


@router.post("/workflows/{workflow_id}/cancel", status_code=202, summary="Cancel a workflow")
async def cancel_workflow(
    workflow_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    record = await act(platform, principal, workflow_id, "workflow", "cancel")
    return JSONResponse(record.public(), status_code=202)


@router.post("/workflows/{workflow_id}/retry", status_code=202, summary="Run a failed or cancelled workflow again")
async def retry_workflow(
    workflow_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    record = await act(platform, principal, workflow_id, "workflow", "retry")
    return JSONResponse(record.public(), status_code=202)


@router.delete("/workflows/{workflow_id}", status_code=204, summary="Delete a workflow, its events and outputs")
async def delete_workflow(
    workflow_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> Response:
    await act(platform, principal, workflow_id, "workflow", "delete")
    return Response(status_code=204)


# ---------------------------------------------------------------- tasks


@router.post("/tasks", status_code=202, summary="Submit a task: one model call, run asynchronously")
async def submit_task(
    body: TaskSubmission,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    record = await submit(platform, body.as_workflow(), principal, "task")
    return JSONResponse({"task_id": record.workflow_id, "status": "pending"}, status_code=202)


@router.get("/tasks", summary="The tenant's tasks, newest first")
async def list_tasks(
    service: str | None = None,
    status: StatusFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    service = service.lower() if service is not None else None
    return JSONResponse(
        await page(platform, principal, "task", WorkflowRecord.public_task, status, limit, offset, service)
    )


@router.get("/tasks/{task_id}", summary="A task")
async def get_task(
    task_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    return JSONResponse((await load(platform, principal, task_id, "task")).public_task())


@router.get("/tasks/{task_id}/output", summary="A task's output")
async def task_output(
    task_id: IdPath,
    format: Literal["json", "url"] | None = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    record = await load(platform, principal, task_id, "task")
    return await output_response(platform, record, TaskSubmission.TASK_NODE, format)


@router.get("/tasks/{task_id}/events", summary="A task's events as server-sent events")
async def task_events(
    task_id: IdPath,
    last_event_id: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None,
    last_event_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    record = await load(platform, principal, task_id, "task")
    return events_response(platform, record, last_event_header, last_event_id)


@router.post("/tasks/{task_id}/cancel", status_code=202, summary="Cancel a task")
async def cancel_task(
    task_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    record = await act(platform, principal, task_id, "task", "cancel")
    return JSONResponse(record.public_task(), status_code=202)


@router.post("/tasks/{task_id}/retry", status_code=202, summary="Run a failed or cancelled task again")
async def retry_task(
    task_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    record = await act(platform, principal, task_id, "task", "retry")
    return JSONResponse(record.public_task(), status_code=202)


@router.delete("/tasks/{task_id}", status_code=204, summary="Delete a task")
async def delete_task(
    task_id: IdPath, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> Response:
    await act(platform, principal, task_id, "task", "delete")
    return Response(status_code=204)


# ---------------------------------------------------------------- uploads


# The raw body is read by the route itself; declared here so that /openapi.json shows what it takes.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            content_type: {"schema": {"type": "string", "format": "binary"}} for content_type in sorted(UPLOAD_TYPES)
        },
    }
}


@router.put(
    "/uploads",
    status_code=201,
    summary="Upload an input (raw body) for workflows and tasks",
    openapi_extra=UPLOAD_BODY,
)
async def upload(
    request: Request, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in UPLOAD_TYPES:
        raise ApiError(
            415, "unsupported_media_type", f"send one of {sorted(UPLOAD_TYPES)}, not {content_type or 'none'}"
        )
    data = await request.body()
    if not data:
        raise ApiError(400, "invalid_media", "the upload is empty")
    content_type = "audio/wav" if content_type == "audio/x-wav" else content_type
    try:
        if content_type == "audio/wav":
            media.wav_info(data)
        elif content_type == "text/plain":
            data.decode("utf-8")
        else:
            info = media.image_info(data)
            if info.content_type != content_type:
                raise InvalidInput(f"the data is {info.content_type}, not {content_type}")
    except InvalidInput as exc:
        raise ApiError(400, "invalid_media", exc.message) from exc
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_media", "text/plain uploads must be UTF-8") from None
    upload_id = f"up_{uuid.uuid4().hex[:20]}"
    await asyncio.to_thread(
        platform.workflows.artifacts.put, upload_key(principal.tenant, upload_id), data, content_type
    )
    record = {"upload_id": upload_id, "content_type": content_type, "bytes": len(data)}
    await asyncio.to_thread(platform.store.put, UPLOADS, f"{principal.tenant}/{upload_id}", record)
    return JSONResponse(record, status_code=201)
