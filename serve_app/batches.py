"""Batches of the OpenAI surface: a JSONL file of requests, each line run as a `low`-priority call
through the fair scheduler, in the workflow executor (durable: a restart loses no line and runs
none twice).

At submission each line is checked as its route checks a request (the same schema and the same
conversion: `prepare_chat`, `prepare_completion`, ...); a bad line goes to the error file, a good
one becomes its model request. The batch is then a workflow of kind `batch` whose nodes are the
lines, independent of one another, each carrying its prepared request (`dag.executor.PREPARED`)
and storing the call's whole result. When the workflow has ended, the ingress writes the output
file (each result as its route would answer it) and the error file, on the first read that sees
it ended: a batch is `completed` only with its files.

The batch document is in the state store (namespace `batches`, key `<tenant>/<id>`, listed
through an index per tenant); the lines (custom ids, bodies) and the refused lines are an artifact
under `+batches/t-<tenant>/<id>/lines`. Every function here but `create` blocks: call it in a thread.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field, ValidationError

from dag.executor import PREPARED
from dag.records import Status, WorkflowRecord, input_key, new_record, workflow_key
from dag.validate import PlannedNode, WorkflowPlan
from serve_app import files
from serve_app.auth import Principal
from serve_app.errors import ApiError, http_error_of, not_found
from serve_app.platform import Platform
from serve_app.responses import ResponseCreateRequest, completed_response, new_id, prepare_response
from serve_app.routes.chat import chat_completion_body, prepare_chat
from serve_app.routes.completions import completion_body, prepare_completion
from serve_app.routes.embeddings import embedding_body, prepare_embedding
from serve_app.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequestIn, OpenAIModel
from state.store import IndexEntry

BATCHES = "batches"
BATCH_ID = re.compile(r"^batch_[a-f0-9]{1,64}$")
# Every line's grant waits in the tenant's queue at once: keep a batch well inside `max_queued`.
MAX_LINES = 1000
Url = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]


class BatchCreateRequest(OpenAIModel):
    input_file_id: str = Field(max_length=100)
    endpoint: Url
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


# ---------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    """How a line of one endpoint becomes a model request, and its result the route's answer."""

    service: str
    schema: type[BaseModel]
    prepare: Callable[[Any, Platform, Principal], Awaitable[Any]]
    answer: Callable[[Any, Any], dict[str, Any]]


async def _chat(body: ChatCompletionRequest, platform: Platform, principal: Principal) -> Any:
    return await prepare_chat(body, platform, principal)


async def _completion(body: CompletionRequest, platform: Platform, principal: Principal) -> Any:
    return await prepare_completion(body, platform)


async def _embedding(body: EmbeddingRequestIn, platform: Platform, principal: Principal) -> Any:
    return await prepare_embedding(body, platform)


async def _response(body: ResponseCreateRequest, platform: Platform, principal: Principal) -> Any:
    request, _ = await prepare_response(body, platform, principal)
    return request


def _created() -> int:
    return int(time.time())


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint(
        "llm",
        ChatCompletionRequest,
        _chat,
        lambda body, result: chat_completion_body(result, f"chatcmpl-{uuid.uuid4().hex}", _created()),
    ),
    "/v1/completions": Endpoint(
        "llm",
        CompletionRequest,
        _completion,
        lambda body, result: completion_body(body, result, f"cmpl-{uuid.uuid4().hex}", _created()),
    ),
    "/v1/embeddings": Endpoint("embed", EmbeddingRequestIn, _embedding, embedding_body),
    "/v1/responses": Endpoint(
        "llm",
        ResponseCreateRequest,
        _response,
        lambda body, result: completed_response(body, new_id("resp"), _created(), result),
    ),
}


# ---------------------------------------------------------------- lines


@dataclass
class LineError(Exception):
    """Why a line did not run: `status` None for a line that is not a request at all (no HTTP
    answer to give), else the status its route would have answered."""

    code: str
    message: str
    status: int | None = None
    details: list[dict[str, Any]] | None = None
    custom_id: str | None = None  # of a line whose shape is wrong, where it has one

    @classmethod
    def of(cls, exc: BaseException) -> LineError:
        error = http_error_of(exc)
        if error is None:
            return cls("internal_error", f"{type(exc).__name__}: {exc}", 500)
        return cls(error.code, error.message, error.status, error.details)


def _parse(text: str, url: str) -> tuple[str, dict[str, Any]]:
    """A line's custom id and body, or a `LineError` naming what is wrong with its shape."""
    try:
        line = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError("invalid_json_line", f"the line is not JSON: {exc.msg}") from None
    if not isinstance(line, dict):
        raise LineError("invalid_line", "a line is a JSON object")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError("missing_custom_id", "a line needs a `custom_id` string")
    problem = None
    if line.get("method") != "POST":
        problem = LineError("invalid_method", "`method` must be POST")
    elif line.get("url") not in ENDPOINTS:
        problem = LineError("invalid_url", f"`url` must be one of {', '.join(ENDPOINTS)}")
    elif line["url"] != url:
        problem = LineError("mismatched_url", f"`url` must be the batch's endpoint, {url}")
    elif not isinstance(line.get("body"), dict):
        problem = LineError("invalid_body", "a line needs a `body` object")
    if problem is not None:
        problem.custom_id = custom_id
        raise problem
    return custom_id, line["body"]


async def _prepare(endpoint: Endpoint, body: dict[str, Any], platform: Platform, principal: Principal) -> Any:
    """The line's model request, checked as its route checks it."""
    try:
        parsed = endpoint.schema.model_validate(body)
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{d['field']}: {d['reason']}" for d in details)
        raise LineError("validation_error", message, 422, details) from None
    if getattr(parsed, "stream", False):
        raise LineError("invalid_input", "stream: a batch line is not streamed", 400, [{"field": "stream"}])
    try:
        return await endpoint.prepare(parsed, platform, principal)
    except Exception as exc:
        raise LineError.of(exc) from None


def _lines_key(tenant: str, batch_id: str) -> str:
    return f"+batches/{files.tenant_segment(tenant)}/{batch_id}/lines"


def _index(tenant: str) -> str:
    return f"batches/{quote(tenant, safe='')}"


def _entry(tenant: str, batch: dict[str, Any]) -> IndexEntry:
    return IndexEntry(f"{tenant}/{batch['id']}", {_index(tenant): float(batch["created_at_s"])})


def _refused(custom_id: str | None, error: LineError) -> dict[str, Any]:
    return {"custom_id": custom_id, "code": error.code, "message": error.message, "status": error.status}


# ---------------------------------------------------------------- create


async def create(platform: Platform, principal: Principal, body: BatchCreateRequest) -> dict[str, Any]:
    """Check the input file's lines, start the good ones, and answer the batch (`in_progress`,
    or `completed` at once when no line can run)."""
    tenant = principal.tenant
    data, _ = await asyncio.to_thread(files.content, platform, tenant, body.input_file_id)
    try:
        texts = [t for t in data.decode("utf-8").splitlines() if t.strip()]
    except UnicodeDecodeError:
        texts = []
    parsed: list[tuple[str, dict[str, Any]] | LineError] = []
    for text in texts:
        try:
            parsed.append(_parse(text, body.endpoint))
        except LineError as error:
            parsed.append(error)
    if not any(isinstance(p, tuple) or p.code != "invalid_json_line" for p in parsed):
        raise ApiError(
            400, "invalid_file", "the input file is not JSONL", [{"field": "input_file_id", "reason": "not JSONL"}]
        )
    if len(parsed) > MAX_LINES:
        reason = f"at most {MAX_LINES} lines in a batch"
        raise ApiError(400, "invalid_file", reason, [{"field": "input_file_id", "reason": reason}])

    endpoint = ENDPOINTS[body.endpoint]
    batch_id = f"batch_{uuid.uuid4().hex}"
    lines: list[dict[str, Any]] = []  # the lines that run, each a node
    refused: list[dict[str, Any]] = []
    requests: dict[str, Any] = {}
    seen: set[str] = set()
    for number, line in enumerate(parsed):
        if isinstance(line, LineError):
            refused.append(_refused(line.custom_id, line))
            continue
        custom_id, line_body = line
        try:
            if custom_id in seen:
                raise LineError("duplicate_custom_id", f"the custom_id {custom_id!r} is used twice")
            seen.add(custom_id)
            request = await _prepare(endpoint, line_body, platform, principal)
        except LineError as error:
            refused.append(_refused(custom_id, error))
            continue
        node_id = f"line-{number}"
        requests[node_id] = request
        lines.append({"node": node_id, "custom_id": custom_id, "body": line_body})

    now = time.time()
    batch: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": body.endpoint,
        "input_file_id": body.input_file_id,
        "completion_window": body.completion_window,
        "status": "in_progress",
        "output_file_id": None,
        "error_file_id": None,
        "errors": None,
        "created_at": int(now),
        "created_at_s": now,
        "in_progress_at": int(now),
        "expires_at": int(now) + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "metadata": body.metadata,
        "request_counts": {"total": len(parsed), "completed": 0, "failed": len(refused)},
        "model": None,
    }
    payload = json.dumps({"lines": lines, "refused": refused}).encode()
    await asyncio.to_thread(platform.workflows.artifacts.put, _lines_key(tenant, batch_id), payload, "application/json")
    if lines:
        await platform.scheduler.call("check_room", tenant)  # 429 when its queue is full
        await _start(platform, tenant, batch_id, endpoint.service, requests)
    await asyncio.to_thread(platform.store.put, BATCHES, f"{tenant}/{batch_id}", batch, _entry(tenant, batch))
    if not lines:
        return await asyncio.to_thread(refresh, platform, tenant, batch_id)
    return public(batch)


async def _start(platform: Platform, tenant: str, batch_id: str, service: str, requests: dict[str, Any]) -> None:
    """The workflow of the batch's lines: independent nodes at `low` priority, each carrying its request."""
    nodes = {node_id: PlannedNode(node_id, service, "", {}) for node_id in requests}
    plan = WorkflowPlan(nodes, [], list(nodes))
    keys = {node_id: input_key(tenant, batch_id, node_id) for node_id in nodes}
    inputs: dict[str, dict[str, Any]] = {node_id: {"artifact": key, "prepared": True} for node_id, key in keys.items()}

    def store() -> WorkflowRecord:
        for node_id, request in requests.items():
            platform.workflows.artifacts.put(keys[node_id], pickle.dumps(request), PREPARED)
        record = new_record(tenant, batch_id, "batch", "batch", "low", plan, inputs)
        platform.workflows.save(record, {"type": "workflow", "status": Status.PENDING.value})
        return record

    record = await asyncio.to_thread(store)
    platform.executor.start.remote(record.key)  # the record is durable: a lost call is resumed on restart


# ---------------------------------------------------------------- read, finalize, cancel


def public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "created_at_s"}


def _load(platform: Platform, tenant: str, batch_id: str) -> dict[str, Any]:
    batch = platform.store.get(BATCHES, f"{tenant}/{batch_id}") if BATCH_ID.match(batch_id) else None
    if batch is None:
        raise not_found(f"batch {batch_id!r}")
    return batch


def refresh(platform: Platform, tenant: str, batch_id: str) -> dict[str, Any]:
    """The batch as it is now: its counts from its lines' statuses while it runs, and, once its
    workflow has ended, finalized (its output and error files written) before it is answered."""
    batch = _load(platform, tenant, batch_id)
    if batch["status"] in ("completed", "failed", "cancelled", "expired"):
        return public(batch)
    record = platform.workflows.find(workflow_key(tenant, batch_id))
    if record is not None and not record.status.final:
        statuses = [node["status"] for node in record.data["nodes"].values()]
        counts = batch["request_counts"]
        refused = counts["total"] - len(statuses)
        counts["completed"] = statuses.count(Status.COMPLETED.value)
        counts["failed"] = refused + statuses.count(Status.FAILED.value)
        return public(batch)
    return public(_finalize(platform, tenant, batch, record))


def _finalize(platform: Platform, tenant: str, batch: dict[str, Any], record: WorkflowRecord | None) -> dict[str, Any]:
    """Write the output and error files of an ended batch and mark it ended. Their ids follow from
    the batch's, so two readers that finalize at once write the same files."""
    batch["finalizing_at"] = batch["finalizing_at"] or int(time.time())
    endpoint = ENDPOINTS[batch["endpoint"]]
    data, _ = platform.workflows.artifacts.get(_lines_key(tenant, batch["id"]))
    saved = json.loads(data)
    outputs: list[dict[str, Any]] = []
    errors = [_error_line(r["custom_id"], LineError(r["code"], r["message"], r["status"])) for r in saved["refused"]]
    models: set[str] = set()
    for line in saved["lines"]:
        node = record.node(line["node"]) if record is not None else {"status": Status.CANCELLED.value}
        if node["status"] == Status.COMPLETED.value and record is not None:
            try:
                result = pickle.loads(platform.workflows.get_output(record, line["node"]).data)
                body = endpoint.answer(endpoint.schema.model_validate(line["body"]), result)
            except Exception as exc:
                errors.append(_error_line(line["custom_id"], LineError.of(exc)))
                continue
            models.add(body.get("model", ""))
            request_id = uuid.uuid4().hex
            response = {"status_code": 200, "request_id": request_id, "body": body}
            outputs.append({"id": f"batch_req_{request_id}", "custom_id": line["custom_id"], "response": response})
            outputs[-1]["error"] = None
        elif node["status"] == Status.FAILED.value:
            code, _, message = (node.get("error") or "model_error: the call failed").partition(": ")
            errors.append(_error_line(line["custom_id"], LineError(code, message or code, 500)))
        elif node["status"] == Status.CANCELLED.value:
            reason = "the batch was cancelled before this line ran"
            errors.append(_error_line(line["custom_id"], LineError("batch_cancelled", reason)))
        else:  # skipped: the executor failed around it
            errors.append(_error_line(line["custom_id"], LineError("not_run", "the line did not run", 500)))
    batch_id = batch["id"]
    if outputs:
        content = "".join(json.dumps(o) + "\n" for o in outputs).encode()
        file_id = f"file-{batch_id}-output"
        files.save(platform, tenant, content, f"{batch_id}_output.jsonl", "batch_output", file_id)
        batch["output_file_id"] = file_id
    if errors:
        content = "".join(json.dumps(e) + "\n" for e in errors).encode()
        file_id = f"file-{batch_id}-errors"
        files.save(platform, tenant, content, f"{batch_id}_error.jsonl", "batch_output", file_id)
        batch["error_file_id"] = file_id
    batch["request_counts"] = {
        "total": batch["request_counts"]["total"],
        "completed": len(outputs),
        "failed": len(errors),
    }
    batch["model"] = next(iter(models)) if len(models) == 1 else None
    now = int(time.time())
    cancelled = record is not None and record.status is Status.CANCELLED
    batch["status"] = "cancelled" if cancelled else "completed"
    batch["cancelled_at" if cancelled else "completed_at"] = now
    platform.store.put(BATCHES, f"{tenant}/{batch_id}", batch, _entry(tenant, batch))
    return batch


def _error_line(custom_id: str | None, error: LineError) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    response = None
    if error.status is not None:
        body = {"error": {"code": error.code, "message": error.message, "details": error.details or []}}
        response = {"status_code": error.status, "request_id": request_id, "body": body}
    return {
        "id": f"batch_req_{request_id}",
        "custom_id": custom_id,
        "response": response,
        "error": {"code": error.code, "message": error.message},
    }


async def cancel(platform: Platform, tenant: str, batch_id: str) -> dict[str, Any]:
    """Cancel the lines that have not run; those that have stay in the output file. 409 once ended."""
    batch = await asyncio.to_thread(_load, platform, tenant, batch_id)
    if batch["status"] not in ("validating", "in_progress"):
        raise ApiError(409, "conflict", f"batch {batch_id!r} is {batch['status']}: it cannot be cancelled")
    batch.update(status="cancelling", cancelling_at=int(time.time()))
    await asyncio.to_thread(platform.store.put, BATCHES, f"{tenant}/{batch_id}", batch, _entry(tenant, batch))
    try:
        await platform.executor_call("cancel", workflow_key(tenant, batch_id))
    except ApiError as error:
        if error.status != 409:  # it ended meanwhile: finalized as it ended
            raise
    return await asyncio.to_thread(refresh, platform, tenant, batch_id)


def page(platform: Platform, tenant: str, limit: int, after: str | None) -> dict[str, Any]:
    """One page of the tenant's batches, newest first, after the batch `after` (OpenAI's cursor)."""
    index = _index(tenant)
    offset = 0
    if after is not None:
        keys = platform.store.index_page(index, 0, platform.store.index_count(index))
        key = f"{tenant}/{after}"
        offset = keys.index(key) + 1 if key in keys else len(keys)
    keys = platform.store.index_page(index, offset, limit + 1)
    found = [refresh(platform, tenant, key[len(tenant) + 1 :]) for key in keys[:limit]]
    return {
        "object": "list",
        "data": found,
        "first_id": found[0]["id"] if found else None,
        "last_id": found[-1]["id"] if found else None,
        "has_more": len(keys) > limit,
    }
