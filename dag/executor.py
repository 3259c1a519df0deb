"""The workflow executor: one named, detached async Ray actor that runs workflows.

Each node is a call of the actor's own `run_node` method whose arguments are its parents'
object references, in edge order. Ray starts the call only when every parent has finished, so a
join waits for all of its parents by construction, independent branches run side by side, and
node outputs travel through Ray's object store, never through the ingress, the scheduler or the
artifact store. A node asks the scheduler for its grant only once its inputs are ready: when its
only parent completes, that parent asks for it on its behalf, so the grant's round trip runs while
Ray hands the output over rather than after (a join asks when it starts).

Every state change is written to the workflow's document and event log, in the order the changes
happen, and every output is persisted as it is produced, before a stored document shows its node
completed. Those writes run beside the work, not in its way: a node's grant and model call do not
wait for its "queued" and "running" records, and its children start while its output is being
stored (a crash before the "completed" record lands runs the node again). While one save of a
workflow runs, the changes made meanwhile merge into its next one: a batch of a thousand lines
stores its document a few times a second, not three times a line.

When the actor restarts (it was killed, or its node died), it resumes each unfinished workflow:
completed nodes are read back from the artifact store and not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve

import modalities
from common.actors import restarted_by_ray
from common.errors import unwrap
from dag.config import ExecutorConfig, Stores
from dag.errors import WorkflowConflict
from dag.records import Status, WorkflowRecord, WorkflowStore, now_rfc3339
from dag.validate import WorkflowPlan
from deployments.types import BackendFailure, Progress
from modalities.base import Output, compose
from modalities.metering import Meter, UsageLedger, used
from modalities.transport import handle_for
from scheduler.client import SchedulerClient
from scheduler.settings import Priority

log = logging.getLogger(__name__)

ACTOR_NAME = "labubu-workflows"
NAMESPACE = "labubu"
# Where the config last handed to the executor is kept, so that a restart does not undo it.
CONFIG_NAMESPACE = "executor"
CONFIG_KEY = "config"
# A write that fails (the state store restarting) is tried again for this long before it gives up.
WRITE_RETRY_S = 60.0
# A long call's progress is written at most this often (and always at 100%).
PROGRESS_WRITE_S = 0.25
# A workflow's document saves take at most this share of the time: after a save that took d
# seconds, the next one waits d * (1 / SAVE_SHARE - 1), at most SAVE_PAUSE_MAX_S, merging what comes
# meanwhile (a small document's saves take a millisecond; a thousand-line batch's, tens of them).
# A save that the executor awaits (a workflow's end, a cancel) goes at once.
SAVE_SHARE = 0.2
SAVE_PAUSE_MAX_S = 0.5


# A node that carries its model request ready-made instead of a prompt and params: a batch line,
# which the ingress converted as its route converts a request. Its own input (spec `inputs`, marked
# `prepared`) is the request, pickled, and its output the call's whole result, pickled, so that the
# ingress answers with the route's body (usage, tool calls, finish reason), not only the text. Only
# the ingress writes such inputs: no client can name this content type.
PREPARED = "application/x-labubu-prepared+pickle"


def is_prepared(record: WorkflowRecord, node_id: str) -> bool:
    return bool(record.data["spec"]["inputs"].get(node_id, {}).get("prepared"))


class NodeFailed(Exception):
    """A node ended in failure after its attempts; its descendants are skipped."""


class NodeCancelled(Exception):
    """A node was cancelled with its workflow."""


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt may succeed: a backend or replica failure, not the client's input."""
    platform_error = unwrap(error)
    if platform_error is not None:
        return platform_error.retryable
    if isinstance(error, ray.exceptions.TaskCancelledError):
        return False
    # A replica or actor that died mid-call (ray.exceptions.*), or Serve's own unavailability.
    return isinstance(error, (ray.exceptions.RayError, serve.exceptions.BackPressureError, TimeoutError))


def describe(error: BaseException) -> str:
    platform_error = unwrap(error)
    if platform_error is not None:
        return f"{platform_error.code}: {platform_error.message}"
    return f"{type(error).__name__}: {error}"


@dataclass
class PendingSave:
    """A save of a workflow's document that waits for the workflow's running write to end. The
    changes made meanwhile add their events to it, and it stores the document as it is when its
    turn comes: one write for all of them."""

    events: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    awaited: asyncio.Event = field(default_factory=asyncio.Event)  # someone waits for it: no pause


class WorkflowExecutor:
    """Runs workflows; see the module docstring. `stores` opens the state and artifact stores in
    the actor's own process; `config` is what a redeploy may change (`reconfigure`)."""

    def __init__(self, stores: Stores, scheduler: Any, config: ExecutorConfig) -> None:
        # Opened here, in the actor's process: an opened store would carry its Redis URL, password
        # included, in the actor's arguments.
        self.store = WorkflowStore(stores.state(), stores.artifacts())
        # Restarted by Ray, the actor keeps its id: its new instance takes over the grants and waits
        # of the one that died (`SchedulerActor.instances`), instead of waiting out their leases.
        holder = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
        self.scheduler = SchedulerClient(scheduler, holder=holder)
        self.meter = Meter(self.scheduler, modalities.cost_models(), UsageLedger(self.store.state))
        self._apply(self._last_config() or config)
        self.records: dict[str, WorkflowRecord] = {}  # the running workflows: the source of truth
        self.plans: dict[str, WorkflowPlan] = {}
        self.writes: dict[str, asyncio.Task[None]] = {}  # each workflow's last queued write
        self.pending_saves: dict[str, PendingSave] = {}  # each workflow's save that has not started
        self.next_save_due: dict[str, float] = {}  # each workflow's earliest next save (monotonic time)
        self.outputs_in_flight: dict[str, set[asyncio.Task[None]]] = {}  # each workflow's output writes
        self.node_refs: dict[str, dict[str, Any]] = {}
        # (workflow, node) -> the node's request and grant, asked for when its only parent completed
        self.early_grants: dict[tuple[str, str], asyncio.Task[tuple[Any, int | None]]] = {}
        self.runs: dict[str, asyncio.Task[None]] = {}
        self._self: Any = None
        self.metrics = ExecutorMetrics()
        use_json_lines(log)
        # A restarted executor resumes at once, not at its first call (Ray runs an async actor's
        # constructor in its event loop); the entry points wait for it too.
        self.resumed = asyncio.get_running_loop().create_task(self._resume_unfinished())

    def _last_config(self) -> ExecutorConfig | None:
        """After a restart, which Ray makes with the arguments the actor was first created with, the
        config it last ran with (`reconfigure` stores it)."""
        if not restarted_by_ray():
            return None
        saved = self.store.state.get(CONFIG_NAMESPACE, CONFIG_KEY)
        return ExecutorConfig(**saved) if saved else None

    def _apply(self, config: ExecutorConfig) -> None:
        self._config = config
        self.app_name = config.app_name
        # Each service's deployment handle, made once and kept, as Serve advises: a new handle starts
        # a router of its own, which registers with the Serve controller (`.options()` shares it).
        self.handles: dict[str, Any] = {}
        self.retries = config.retries
        self.backoff_s = config.backoff_s
        self.backoff_max_s = config.backoff_max_s
        self.meter.costs = modalities.cost_models(config.cost_models)
        self.scheduler.lease_s = config.lease_s

    async def reconfigure(self, config: ExecutorConfig) -> None:
        """Run with a redeploy's settings from now on: retries, backoff and cost models apply to the
        next attempt of every node; running workflows go on."""
        self._apply(config)
        await asyncio.to_thread(self.store.state.put, CONFIG_NAMESPACE, CONFIG_KEY, config.to_dict())

    async def config(self) -> ExecutorConfig:
        """The config the executor runs with."""
        return self._config

    # -------------------------------------------------------------- entry points

    async def start(self, key: str) -> None:
        """Run a submitted workflow (its document is already stored)."""
        await self._resume_all()
        if key not in self.runs:
            record = await asyncio.to_thread(self.store.find, key)
            if record is not None and not record.status.final and key not in self.runs:
                self._launch(record)

    async def cancel(self, key: str) -> None:
        """Cancel a workflow: its pending, queued and running nodes end cancelled. 409 once it has ended."""
        await self._resume_all()
        record = self.records.get(key) or await asyncio.to_thread(self.store.find, key)
        if record is None:
            return
        if record.status.final:
            raise WorkflowConflict(f"workflow {record.workflow_id!r} has already ended ({record.status.value})")
        record.data["cancel_requested"] = True
        await self._save(record)
        refs = self.node_refs.get(key, {})
        for ref in refs.values():
            ray.cancel(ref)
        run = self.runs.get(key)
        if run is None:  # not running here: end it directly
            await self._finish(record)
        else:
            await asyncio.shield(run)

    async def retry(self, key: str) -> None:
        """Run a failed or cancelled workflow again: completed nodes keep their outputs."""
        await self._resume_all()
        record = await asyncio.to_thread(self.store.find, key)
        if record is None:
            return
        if key in self.runs or record.status not in (Status.FAILED, Status.CANCELLED):
            raise WorkflowConflict(
                f"only a failed or cancelled workflow can be retried; {record.workflow_id!r} is {record.status.value}"
            )
        for node in record.data["nodes"].values():
            if node["status"] != Status.COMPLETED.value:
                node.update(status=Status.PENDING.value, error=None, finished_at=None)
                node.pop("progress", None)  # a new run counts its steps from the start
        record.data["cancel_requested"] = False
        record.data["status"] = Status.PENDING.value
        await self._save(record, {"type": "workflow", "status": Status.PENDING.value})
        self._launch(record)

    async def delete(self, key: str) -> None:
        """Cancel the workflow if it runs, then remove its document, events and artifacts."""
        await self._resume_all()
        record = await asyncio.to_thread(self.store.find, key)
        if record is None:
            return
        if not record.status.final:
            await self.cancel(key)
        await asyncio.to_thread(self.store.delete, record)

    async def ping(self) -> str:
        await self._resume_all()
        return "pong"

    # -------------------------------------------------------------- running a workflow

    async def _resume_all(self) -> None:
        """Wait until the workflows that had not ended when the last executor died are running again."""
        if self.resumed.done() and self.resumed.exception() is not None:  # the store was down: try again
            self.resumed = asyncio.get_running_loop().create_task(self._resume_unfinished())
        await asyncio.shield(self.resumed)

    async def _resume_unfinished(self) -> None:
        """Once per actor life, from its constructor: pick up every workflow that had not ended."""
        self._self = ray.get_runtime_context().current_actor
        for record in await asyncio.to_thread(self.store.unfinished):
            if record.key not in self.runs:
                log.info("resuming workflow %s", record.key)
                self._launch(record)

    def _launch(self, record: WorkflowRecord) -> None:
        self.records[record.key] = record
        self.plans[record.key] = record.plan()
        self.runs[record.key] = asyncio.get_running_loop().create_task(self._run(record))

    async def _run(self, record: WorkflowRecord) -> None:
        key = record.key
        try:
            plan = self.plans[key]
            refs: dict[str, Any] = {}
            for node_id in plan.order:
                node = record.node(node_id)
                if node["status"] == Status.COMPLETED.value:
                    output = await asyncio.to_thread(self.store.get_output, record, node_id)
                    refs[node_id] = ray.put(output)
                    continue
                if node["status"] in (Status.QUEUED.value, Status.RUNNING.value):
                    node["status"] = Status.PENDING.value  # interrupted by a crash: it runs again
                parents = [refs[edge.source] for edge in plan.incoming[node_id]]
                refs[node_id] = self._self.run_node.remote(key, node_id, *parents)
            self.node_refs[key] = refs
            if record.status is Status.PENDING:
                record.data["status"] = Status.RUNNING.value
                self._write(record, {"type": "workflow", "status": Status.RUNNING.value})
            # Failures are in each node's record; the outcomes themselves are not needed here.
            await asyncio.gather(*refs.values(), return_exceptions=True)
            await self._finish(record)
        except Exception:
            log.exception("workflow %s failed in the executor", key)
            await self._finish(record, executor_failed=True)
        finally:
            for early_key in [k for k in self.early_grants if k[0] == key]:  # children that never started
                self._give_back(self.early_grants.pop(early_key))
            self.runs.pop(key, None)
            self.node_refs.pop(key, None)
            self.records.pop(key, None)
            self.plans.pop(key, None)

    async def _finish(self, record: WorkflowRecord, executor_failed: bool = False) -> None:
        """Settle every node that did not complete, then the workflow's own status."""
        cancelled = bool(record.data.get("cancel_requested"))
        # A node that never ran to its end was cancelled with the workflow, or skipped behind a failed parent.
        end = Status.CANCELLED if cancelled else Status.SKIPPED
        for node_id, node in record.data["nodes"].items():
            if node["status"] not in (Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value):
                node["status"] = end.value
                self._write(record, {"type": "node", "node_id": node_id, "status": end.value})
        statuses = {node["status"] for node in record.data["nodes"].values()}
        if cancelled:
            final = Status.CANCELLED
        elif executor_failed or Status.FAILED.value in statuses:
            final = Status.FAILED
        else:
            final = Status.COMPLETED
        record.data["status"] = final.value
        await self._save(record, {"type": "workflow", "status": final.value})
        self.next_save_due.pop(record.key, None)
        self.outputs_in_flight.pop(record.key, None)
        self.metrics.workflow_ended(record, final)
        log.info("workflow %s", final.value, extra={"tenant": record.tenant, "workflow_id": record.workflow_id})

    async def _save(self, record: WorkflowRecord, event: dict[str, Any] | None = None) -> None:
        """Save the document (and an event) after the workflow's earlier writes, and wait for it."""
        task = self._write(record, event)
        self.pending_saves[record.key].awaited.set()
        await asyncio.shield(task)

    def _write(self, record: WorkflowRecord, event: dict[str, Any] | None = None) -> asyncio.Task[None]:
        """Save the document as it is now (and an event) after the workflow's earlier writes: the
        task of the save that holds this change.

        One workflow's saves land in the order of its changes, so its event log is in order and its
        document never shows a node running before its parent completed. A save snapshots the
        document when it starts, and first waits for the outputs of the nodes the snapshot shows
        completed (`_store_output`).
        """
        pending = self.pending_saves.get(record.key)
        if pending is None:
            pending = self.pending_saves[record.key] = PendingSave()
            pending.task = self._queue(record.key, lambda: self._store_document(record, pending))
        if event is not None:
            pending.events.append(event)
        assert pending.task is not None
        return pending.task

    async def _store_document(self, record: WorkflowRecord, pending: PendingSave) -> None:
        pause = self.next_save_due.get(record.key, 0.0) - time.monotonic()
        if pause > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending.awaited.wait(), pause)
        if self.pending_saves.get(record.key) is pending:
            del self.pending_saves[record.key]  # the changes from now on go to the next save
        started = time.monotonic()
        snapshot = record.snapshot()
        # The nodes it shows completed had their outputs' writes started in the same step: those
        # still running are all the snapshot can need.
        outputs = list(self.outputs_in_flight.get(record.key, ()))
        cost = time.monotonic() - started
        if outputs:
            await asyncio.gather(*outputs)
        started = time.monotonic()
        # Tried again as it is: the events must land with the document they describe. A fresh
        # snapshot could show changes (the workflow completed) whose events wait in the next save.
        await self._retrying(record.key, lambda: asyncio.to_thread(self.store.save, snapshot, *pending.events))
        ended = time.monotonic()
        cost += ended - started
        self.next_save_due[record.key] = ended + min(SAVE_PAUSE_MAX_S, cost * (1 / SAVE_SHARE - 1))

    def _store_output(self, record: WorkflowRecord, node_id: str, output: Output) -> None:
        """Start writing a node's output; the saves that show the node completed wait for it."""
        in_flight = self.outputs_in_flight.setdefault(record.key, set())

        async def write() -> None:
            await asyncio.to_thread(self.store.put_output, record, node_id, output)

        task = asyncio.get_running_loop().create_task(self._retrying(record.key, write))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    def _queue(self, key: str, write: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `write()` once the workflow's earlier writes have ended."""
        previous = self.writes.get(key)
        task = asyncio.get_running_loop().create_task(self._write_after(key, previous, write))
        self.writes[key] = task
        return task

    async def _write_after(
        self, key: str, previous: asyncio.Task[None] | None, write: Callable[[], Awaitable[None]]
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):  # its failure was logged; this write still goes
                await asyncio.shield(previous)
        try:
            await write()
        finally:
            if self.writes.get(key) is asyncio.current_task():
                del self.writes[key]

    async def _retrying(self, key: str, write: Callable[[], Awaitable[Any]]) -> None:
        """`write()`, tried again while the store fails (it restarts), for up to `WRITE_RETRY_S`."""
        deadline = time.monotonic() + WRITE_RETRY_S
        delay = 0.1
        while True:
            try:
                await write()
                return
            except Exception:
                if time.monotonic() > deadline:
                    log.exception("a write of workflow %s failed for good", key)
                    raise
                log.warning("a write of workflow %s failed; trying again", key, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    def _node_event(self, record: WorkflowRecord, node_id: str, status: Status) -> None:
        node = record.node(node_id)
        event = {"type": "node", "node_id": node_id, "status": status.value, "attempt": node["attempts"]}
        self._write(record, event)
        log.info(
            "node %s",
            status.value,
            extra={
                "tenant": record.tenant,
                "workflow_id": record.workflow_id,
                "node_id": node_id,
                "service": node["service"],
                "attempt": node["attempts"],
            },
        )

    # -------------------------------------------------------------- one node

    # Nodes report no task events, like the scheduler's grants (see scheduler/actor.py): the workflow's
    # own events and metrics follow them. `start`, `cancel` and the like still show on the dashboard.
    @ray.method(enable_task_events=False)
    async def run_node(self, key: str, node_id: str, *inputs: Output) -> Output:
        """Run one node once its parents' outputs (`inputs`, in edge order) are ready."""
        record = self.records[key]
        node = record.node(node_id)
        spec = self.plans[key].nodes[node_id]
        early = self.early_grants.pop((key, node_id), None)
        if record.data.get("cancel_requested"):
            self._give_back(early)
            raise NodeCancelled(node_id)
        try:
            if early is not None:
                request, ticket = await early
            else:
                request, ticket = await self._request(record, node_id, list(inputs)), None
            output = await self._attempts(record, node_id, spec.service, request, ticket, queued=early is not None)
        except asyncio.CancelledError:
            node.update(status=Status.CANCELLED.value, finished_at=now_rfc3339())
            self._write(record, {"type": "node", "node_id": node_id, "status": Status.CANCELLED.value})
            raise
        except Exception as exc:
            node.update(status=Status.FAILED.value, error=describe(exc), finished_at=now_rfc3339())
            self.metrics.node_ended(spec.service, Status.FAILED)
            self._write(
                record, {"type": "node", "node_id": node_id, "status": Status.FAILED.value, "error": node["error"]}
            )
            raise NodeFailed(f"{node_id}: {node['error']}") from None
        self._store_output(record, node_id, output)  # in the same step as the node's "completed"
        info = {"content_type": output.content_type, "bytes": len(output.data)}
        node.update(status=Status.COMPLETED.value, output=info, finished_at=now_rfc3339(), error=None)
        self.metrics.node_ended(spec.service, Status.COMPLETED)
        self._write(record, {"type": "node", "node_id": node_id, "status": Status.COMPLETED.value})
        self._grant_children_early(record, node_id, output)
        return output

    async def _request(self, record: WorkflowRecord, node_id: str, inputs: list[Output]) -> Any:
        """The node's model request: its prompt, its own input, then each parent's edge prompt and
        output; or, for a prepared node, the request it carries."""
        plan = self.plans[record.key]
        spec = plan.nodes[node_id]
        parts: list[str | Output] = [spec.prompt]
        if node_id in record.data["spec"]["inputs"]:
            own = await asyncio.to_thread(self.store.get_input, record, node_id)
            if is_prepared(record, node_id) and isinstance(own, Output):
                return pickle.loads(own.data)
            if own is not None:
                parts.append(own)
        for edge, upstream in zip(plan.incoming[node_id], inputs, strict=True):
            parts.extend([edge.prompt, upstream])
        text, media = compose(parts)
        return modalities.build_request(spec.service, spec.params, text, media)

    # A child's grant, asked for as soon as its only parent completes.

    def _grant_children_early(self, record: WorkflowRecord, node_id: str, output: Output) -> None:
        """Start the children whose only parent this node is on their request and grant now.

        Ray hands the output to such a child through the object store and starts its call a few
        milliseconds later; asking the scheduler meanwhile takes the grant's round trip off the
        chain's path. A child with several parents (a join) asks when it starts, as usual.
        """
        plan = self.plans[record.key]
        for child in plan.children[node_id]:
            if len(plan.incoming[child]) == 1 and not record.data.get("cancel_requested"):
                task = asyncio.get_running_loop().create_task(self._early_grant(record, child, output))
                self.early_grants[(record.key, child)] = task

    async def _early_grant(self, record: WorkflowRecord, node_id: str, parent_output: Output) -> tuple[Any, int | None]:
        """The node's request, and its grant (None if the scheduler refused it: the node then asks
        again itself, with its usual retries). The node is queued from here on."""
        request = await self._request(record, node_id, [parent_output])
        service = self.plans[record.key].nodes[node_id].service
        self._mark_queued(record, node_id)
        try:
            ticket = await self.scheduler.grant(
                service, record.tenant, self._estimate(service, request), record.priority
            )
        except Exception:
            return request, None
        return request, ticket

    def _give_back(self, early: asyncio.Task[tuple[Any, int | None]] | None) -> None:
        """An early grant its node will not use: withdrawn if it is still asked for, else released."""
        if early is None:
            return
        if not early.done():
            early.cancel()  # the scheduler client withdraws the request, or returns the grant
        elif not early.cancelled() and early.exception() is None:
            ticket = early.result()[1]
            if ticket is not None:
                self.scheduler.release(ticket, None)

    def _handle(self, service: str) -> Any:
        if service not in self.handles:
            self.handles[service] = serve.get_deployment_handle(service, app_name=self.app_name)
        return self.handles[service]

    def _estimate(self, service: str, request: Any) -> float:
        return self.meter.estimate(service, request)

    def _mark_queued(self, record: WorkflowRecord, node_id: str) -> None:
        node = record.node(node_id)
        node.update(status=Status.QUEUED.value, attempts=node["attempts"] + 1, error=None)
        self._node_event(record, node_id, Status.QUEUED)

    async def _attempts(
        self,
        record: WorkflowRecord,
        node_id: str,
        service: str,
        request: Any,
        ticket: int | None = None,
        queued: bool = False,
    ) -> Output:
        """The node's model call under a grant, tried again on retryable errors.

        For a node whose grant was asked for early: `ticket`, that grant (None if it was refused),
        and `queued`, the node's first attempt is already marked queued.
        """
        node = record.node(node_id)
        handle = handle_for(self._handle(service), request)
        modality = modalities.get(service)
        if record.priority == Priority.LOW:  # batch lines and low tasks run behind the replica's other calls
            request = modality.in_background(request)
        estimate = self._estimate(service, request)
        for attempt in range(1, self.retries + 2):
            if not queued:
                self._mark_queued(record, node_id)
            queued = False
            try:
                async with self.meter.admitted(
                    service, record.tenant, estimate, record.priority, ticket=ticket
                ) as call:
                    node.update(status=Status.RUNNING.value, started_at=node["started_at"] or now_rfc3339())
                    if modality.reports_progress:
                        node.setdefault("progress", 0)
                    self._node_event(record, node_id, Status.RUNNING)
                    if modality.reports_progress:
                        result = await self._streamed(record, node_id, handle, request)
                    else:
                        result = await handle.run.remote(request)
                    self.meter.charge(call, used(service, request, result))
                details = modality.details(result)
                if details:  # what the backend really made (a video's size and length)
                    node["result"] = details
                if is_prepared(record, node_id):
                    return Output(pickle.dumps(result), PREPARED)
                return modality.output(result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt > self.retries or not is_retryable(exc):
                    raise
                ticket = None  # a grant is used once: the next attempt asks again
                node["error"] = describe(exc)
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter: retries do not march in step
        raise AssertionError("unreachable")

    async def _streamed(self, record: WorkflowRecord, node_id: str, handle: Any, request: Any) -> Any:
        """The result of a long call that streams `Progress` chunks before it (a video's denoising
        steps). Each becomes the node's `progress` (0-100) with a `running` event, at most every
        `PROGRESS_WRITE_S` and always at 100; a step that comes sooner is written when the interval
        ends, unless a later one has come by then, so that no step waits for the next one to be shown.
        Progress never goes down: an attempt after a failed one reports it again only once it has
        passed where the failed one stopped. A cancelled node cancels the call: the replica stops its
        engine within a step, and the grant is released as the call ends here."""
        node = record.node(node_id)
        responses = handle.options(stream=True).stream.remote(request)
        written_at = 0.0
        due: asyncio.TimerHandle | None = None  # the write of a step that came within the interval

        def write(percent: int) -> None:
            nonlocal written_at
            written_at = time.monotonic()
            node["progress"] = percent
            event = {"type": "node", "node_id": node_id, "status": Status.RUNNING.value}
            self._write(record, {**event, "progress": percent})

        try:
            async for chunk in responses:
                if not isinstance(chunk, Progress):
                    return chunk
                if chunk.percent <= node.get("progress", 0):
                    continue
                if due is not None:
                    due.cancel()  # this later step is written instead
                    due = None
                wait_s = written_at + PROGRESS_WRITE_S - time.monotonic()
                if chunk.percent == 100 or wait_s <= 0:
                    write(chunk.percent)
                else:
                    due = asyncio.get_running_loop().call_later(wait_s, write, chunk.percent)
        except asyncio.CancelledError:
            responses.cancel()
            raise
        finally:
            if due is not None:
                due.cancel()
        raise BackendFailure(f"the {node['service']} call ended without a result")


class JsonLines(logging.Formatter):
    """One JSON object a line, with the record's extra fields (tenant, workflow_id, node_id, ...)."""

    STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in self.STANDARD})
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def use_json_lines(logger: logging.Logger) -> None:
    """The executor's logs as JSON lines, like the Serve deployments' (an actor has no Serve config)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


class ExecutorMetrics:
    """Workflow and node outcomes, through Ray's metrics API."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.workflows = metrics.Counter("labubu_workflows", "Workflows ended", tag_keys=("kind", "status"))
        self.nodes = metrics.Counter("labubu_workflow_nodes", "Workflow nodes ended", tag_keys=("service", "status"))

    def workflow_ended(self, record: WorkflowRecord, status: Status) -> None:
        self.workflows.inc(1, {"kind": str(record.data.get("kind", "workflow")), "status": status.value})

    def node_ended(self, service: str, status: Status) -> None:
        self.nodes.inc(1, {"service": service, "status": status.value})


def executor_actor(stores: Stores, scheduler: Any, config: ExecutorConfig, name: str = ACTOR_NAME) -> Any:
    """The cluster's workflow executor, created on first use; later callers get the same one.

    The actor is detached: it outlives the deployment that made it. A caller that finds it running
    hands it `config`, so that a redeploy's settings take effect.
    """
    actor: Any = (
        ray.remote(WorkflowExecutor)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,  # a node call is not retried by Ray: the restarted actor resumes it
            max_concurrency=100_000,
            num_cpus=0,
        )
        .remote(stores, scheduler, config)
    )
    # A no-op for an actor just made. Not awaited: a replica's start does not wait on it, and it lands
    # within moments (an async actor may run a caller's next call first).
    actor.reconfigure.remote(config)
    return actor
