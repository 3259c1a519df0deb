"""The scheduler actor: one named, detached, async Ray actor that hosts the fair-share policy.

Callers `await grant(...)`, which returns when their request may run, and then `release(ticket,
actual_cost)`. The actor holds metadata only (service, tenant, cost, priority), never payloads.
A busy caller batches instead (`SchedulerClient` does): one `submit_many` call carries the releases
and grant requests of one turn of its event loop and answers each request at once, granted or
waiting; only a request that must wait costs a second call, `wait(ticket)`. Ray's per-call cost,
not the policy, is what limits grants per second, so fewer calls is what makes the actor fast.

- A grant is a lease: its holder renews it while the call runs (`SchedulerClient` does, a few
  times per lease); one that is neither renewed nor released within `lease_s` (its holder died) is
  released by the actor, charging the estimate, so capacity never leaks for long.
- A caller that gives up while waiting (`ray.cancel`, or the awaiting task is cancelled) withdraws
  its request.
- Tenant settings are written to the state store when an admin sets them; virtual times are
  snapshotted every `snapshot_interval_s`. A restarted actor (`max_restarts=-1`) restores both.
- The actor is detached and outlives a redeploy: the new ingress hands it the new config
  (`reconfigure`), which keeps every tenant's state. That config is stored too, so that a restart
  (which Ray makes with the arguments the actor was first created with) does not undo it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import ray

from common.actors import restarted_by_ray
from scheduler.errors import UnknownTicket
from scheduler.policy import FairScheduler, Grant
from scheduler.settings import SchedulerConfig, TenantSettings

log = logging.getLogger(__name__)

ACTOR_NAME = "labubu-scheduler"
NAMESPACE = "labubu"
TENANTS_NAMESPACE = "tenants"
SNAPSHOT_NAMESPACE = "scheduler"
SNAPSHOT_KEY = "snapshot"
CONFIG_KEY = "config"


class SchedulerActor:
    """Hosts `FairScheduler` on an event loop; see the module docstring.

    `open_store` opens the state store (a `state.store.StateStore`) in the actor's own process, from
    its environment: an opened store would carry its URL, and the Redis password in it, into the
    actor's arguments. None keeps nothing (tests of the policy alone).
    """

    def __init__(self, config: SchedulerConfig, open_store: Callable[[], Any] | None = None) -> None:
        self.store = open_store() if open_store is not None else None
        self._config = config = self._last_config() or config
        # Tickets never repeat across restarts: a late release from before one cannot end another's grant.
        self.policy = FairScheduler(config.services, config.tenant_defaults, first_ticket=time.time_ns() // 1000)
        self.waiters: dict[int, asyncio.Future[Grant]] = {}
        self.submitted_at: dict[int, float] = {}
        self.leases: dict[int, float] = {}
        # A caller that Ray restarts (the workflow executor) submits as `(holder, instance)`: the first
        # submission of a new instance lets go of what the previous one waited for or held. Its calls
        # died with it; its waits would otherwise be granted to nobody, one after another, each
        # holding a slot until its lease ran out.
        self.instances: dict[str, str] = {}  # holder -> its current instance
        self.instance_of: dict[int, str] = {}  # ticket -> the instance that submitted it
        self.dirty = False
        self.metrics = SchedulerMetrics()
        self._restore()
        self._changed: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- state

    def _last_config(self) -> SchedulerConfig | None:
        """After a restart, the config the actor last ran with, if it was stored (see `reconfigure`)."""
        if self.store is None or not restarted_by_ray():
            return None
        saved = self.store.get(SNAPSHOT_NAMESPACE, CONFIG_KEY)
        return SchedulerConfig.from_dict(saved) if saved else None

    def _restore(self) -> None:
        if self.store is None:
            return
        snapshot = self.store.get(SNAPSHOT_NAMESPACE, SNAPSHOT_KEY)
        if snapshot:
            self.policy.restore(snapshot)
        tenants = self.store.items(TENANTS_NAMESPACE)
        for tenant, settings in tenants:
            self.policy.set_tenant(tenant, TenantSettings.from_dict(settings))
        log.info("scheduler restored: %d configured tenants", len(tenants))

    def _save_snapshot(self) -> None:
        if self.store is not None and self.dirty:
            self.dirty = False
            self.store.put(SNAPSHOT_NAMESPACE, SNAPSHOT_KEY, self.policy.snapshot())

    # -------------------------------------------------------------- the loop

    def _ensure_pump(self) -> None:
        # The loop exists only once the actor runs its first call: start the pump lazily.
        if self._pump_task is None:
            self._changed = asyncio.Event()
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _pump(self) -> None:
        """Wakes for rate buckets, expires leases and snapshots; grants themselves happen inline."""
        assert self._changed is not None
        last_snapshot = time.monotonic()
        while True:
            now = time.monotonic()
            wakeup = self.policy.next_wakeup(now)
            timeout = 0.5 if wakeup is None else min(0.5, max(0.0, wakeup - now))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            self._changed.clear()
            try:
                now = time.monotonic()
                self._expire_leases(now)
                self._dispatch(now)
                if now - last_snapshot >= self._config.snapshot_interval_s:
                    last_snapshot = now
                    await asyncio.to_thread(self._save_snapshot)
                    self.metrics.flush(self.policy.stats())
            except Exception:  # the pump must outlive any one bad iteration
                log.exception("scheduler pump iteration failed")

    def _dispatch(self, now: float) -> None:
        # A grant whose caller left is given back, which frees its slot: dispatch again until none is.
        returned = True
        while returned:
            returned = False
            for grant in self.policy.dispatch(now):
                waiter = self.waiters.pop(grant.ticket, None)
                submitted = self.submitted_at.pop(grant.ticket, now)
                if waiter is None or waiter.done():
                    self.policy.cancel(grant.ticket)
                    self.instance_of.pop(grant.ticket, None)
                    returned = True
                    continue
                self.leases[grant.ticket] = now + self._config.lease_s
                self.metrics.granted(grant, now - submitted)
                waiter.set_result(grant)
        self.dirty = True

    def _expire_leases(self, now: float) -> None:
        expired = [ticket for ticket, deadline in self.leases.items() if deadline <= now]
        for ticket in expired:
            log.warning("lease of ticket %d expired: its holder did not release it", ticket)
            self._release(ticket, None)

    # -------------------------------------------------------------- the API

    # Every request's calls (grants, waits, releases, renewals) report no task events: the GCS keeps
    # the last RAY_task_events_max_num_task_in_gcs (100,000) of them (gcs_server grew 76 MB over
    # `benchmarks/load.py --overload` with them, 4 MB without), and they would flood the dashboard's
    # task list. The actor, its state and its administrative calls still show there.
    @ray.method(enable_task_events=False)
    async def grant(self, service: str, tenant: str, cost: float, priority: str = "default", wait: bool = True) -> int:
        """Wait until the request may run; its ticket. Raises `QuotaExceeded`, `ServiceOverloaded`."""
        self._ensure_pump()
        now = time.monotonic()
        ticket = self._submit(service, tenant, cost, priority, wait, None, now)
        self._dispatch(now)
        return await self.wait(ticket)  # type: ignore[operator]  # `ray.method` is typed remote; it is this coroutine

    @ray.method(enable_task_events=False)
    async def submit_many(
        self,
        releases: list[tuple[int, float | None]],
        requests: list[tuple[str, str, float, str, bool, float | None]],
        instance: tuple[str, str] | None = None,
    ) -> list[tuple[str, Any]]:
        """Releases, then grant requests `(service, tenant, cost, priority, wait, max_wait_s)`, in
        one call (`FairScheduler.submit` says what each field does).

        Releases go first: they free the slots the requests may take. Each request is answered at
        once, in order: `("granted", ticket)`, `("waiting", ticket)` (call `wait(ticket)` for it),
        or `("error", exception)` (`QuotaExceeded`, `ServiceOverloaded`, a bad cost...).

        `instance`: `(holder, instance)` of a caller that Ray restarts (see `instances`).
        """
        self._ensure_pump()
        if instance is not None:
            self._take_over(*instance)
        now = time.monotonic()
        for ticket, actual_cost in releases:
            self._release(ticket, actual_cost, now)
        submitted: list[int | Exception] = []
        for service, tenant, cost, priority, wait, max_wait_s in requests:
            try:
                submitted.append(self._submit(service, tenant, cost, priority, wait, max_wait_s, now))
            except Exception as exc:  # one caller's bad request is that caller's answer, not the batch's
                submitted.append(exc)
        if instance is not None:
            self.instance_of.update((item, instance[1]) for item in submitted if not isinstance(item, Exception))
        self._dispatch(now)
        outcomes: list[tuple[str, Any]] = []
        for item in submitted:
            if isinstance(item, Exception):
                outcomes.append(("error", item))
            else:
                outcomes.append(("waiting", item) if item in self.waiters else ("granted", item))
        return outcomes

    @ray.method(enable_task_events=False)
    async def wait(self, ticket: int) -> int:
        """Wait until a submitted request is granted; its ticket. A caller that gives up withdraws it.

        Raises `UnknownTicket` for a ticket this actor does not hold: cancelled, or submitted to a
        predecessor that died (the caller submits again).
        """
        waiter = self.waiters.get(ticket)
        if waiter is None:
            if ticket in self.leases:  # granted since it was submitted
                return ticket
            raise UnknownTicket(f"ticket {ticket} is not waiting")
        self._wake()  # it may wait on a rate bucket: the pump must know when to look again
        try:
            await waiter
        except asyncio.CancelledError:
            self._cancel(ticket)
            raise
        return ticket

    @ray.method(enable_task_events=False)
    async def cancel(self, ticket: int) -> None:
        """Withdraw a request, waiting or granted (in full: its caller gave up before using it)."""
        self._cancel(ticket)

    def _take_over(self, holder: str, instance: str) -> None:
        """`instance` is now `holder`'s: let go of the tickets of the instance it replaces."""
        previous = self.instances.get(holder)
        if previous == instance:
            return
        self.instances[holder] = instance
        if previous is None:
            return
        orphans = [ticket for ticket, owner in self.instance_of.items() if owner == previous]
        for ticket in orphans:
            if ticket in self.leases:  # granted: its call may have run, so it is charged as an expired lease is
                self._release(ticket, None)
            else:
                self._cancel(ticket)
        if orphans:
            log.warning("%s restarted: let go of %d requests of its previous instance", holder, len(orphans))
            self._dispatch(time.monotonic())

    def _cancel(self, ticket: int) -> None:
        self.instance_of.pop(ticket, None)
        waiter = self.waiters.pop(ticket, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()
        self.submitted_at.pop(ticket, None)
        self.leases.pop(ticket, None)
        self.policy.cancel(ticket)
        self._dispatch(time.monotonic())

    def _submit(
        self, service: str, tenant: str, cost: float, priority: str, wait: bool, max_wait_s: float | None, now: float
    ) -> int:
        ticket = self.policy.submit(service, tenant, cost, now=now, priority=priority, wait=wait, max_wait_s=max_wait_s)
        self.waiters[ticket] = asyncio.get_running_loop().create_future()
        self.submitted_at[ticket] = now
        return ticket

    @ray.method(enable_task_events=False)
    async def release(self, ticket: int, actual_cost: float | None = None) -> bool:
        """End a grant, charging `actual_cost`; False if it was already released (e.g. its lease expired)."""
        now = time.monotonic()
        released = self._release(ticket, actual_cost, now)
        self._dispatch(now)
        return released

    def _release(self, ticket: int, actual_cost: float | None, ended_at: float | None = None) -> bool:
        """`ended_at`: when the holder said its call ended; None when it did not say (an expired
        lease, a restarted holder), which tells nothing of how long the service's calls take."""
        self.instance_of.pop(ticket, None)
        if self.leases.pop(ticket, None) is None:
            return False
        try:
            self.policy.release(ticket, actual_cost, now=ended_at)
        except UnknownTicket:
            return False
        return True

    @ray.method(enable_task_events=False)
    async def renew(self, ticket: int) -> bool:
        """Extend a grant's lease by `lease_s`; False if it has already ended."""
        if ticket not in self.leases:
            return False
        self.leases[ticket] = time.monotonic() + self._config.lease_s
        return True

    @ray.method(enable_task_events=False)
    async def release_many(self, releases: list[tuple[int, float | None]]) -> int:
        """Release several grants in one call (a client batching its releases)."""
        now = time.monotonic()
        released = sum(self._release(ticket, cost, now) for ticket, cost in releases)
        self._dispatch(now)
        return released

    async def set_tenant(self, tenant: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge `changes` into the tenant's settings, store them durably, apply them at once."""
        settings = self.policy.tenant(tenant).settings.merged(changes)
        if self.store is not None:
            await asyncio.to_thread(self.store.put, TENANTS_NAMESPACE, tenant, settings.to_dict())
        record = self.policy.set_tenant(tenant, settings)
        self._dispatch(time.monotonic())
        return record.to_dict()

    async def tenant(self, tenant: str) -> dict[str, Any]:
        return self.policy.tenant(tenant).to_dict()

    async def tenants(self) -> list[dict[str, Any]]:
        return [record.to_dict() for record in self.policy.tenants()]

    @ray.method(enable_task_events=False)
    async def check_room(self, tenant: str) -> None:
        """Raise `QuotaExceeded` when the tenant's queue is full (before a workflow is accepted)."""
        self.policy.check_room(tenant, time.monotonic())

    async def set_dispatch_limits(self, limits: dict[str, int]) -> dict[str, int]:
        """Set services' dispatch limits (the ingress follows Serve's replicas with this every few
        seconds: one call, cheap when nothing changed); the ones that changed."""
        changed = {
            service: limit for service, limit in limits.items() if self.policy.set_dispatch_limit(service, limit)
        }
        if changed:
            self._dispatch(time.monotonic())
        return changed

    async def reconfigure(self, config: SchedulerConfig) -> None:
        """Run with a redeploy's config from now on: its lease (from each grant's next renewal), tenant
        defaults and service limits. Admin-set tenants, virtual times, queues and grants are kept."""
        self.policy.configure(config.services, config.tenant_defaults)
        self._config = config
        self._dispatch(time.monotonic())  # looser limits may let waiting requests through
        if self.store is not None:
            await asyncio.to_thread(self.store.put, SNAPSHOT_NAMESPACE, CONFIG_KEY, config.to_dict())

    async def config(self) -> SchedulerConfig:
        """The config the actor runs with."""
        return self._config

    async def stats(self) -> dict[str, Any]:
        return self.policy.stats()

    async def ping(self) -> str:
        return "pong"


class SchedulerMetrics:
    """Queue depth, in-flight, granted cost and wait time, through Ray's metrics API (Prometheus)."""

    def __init__(self) -> None:
        from ray.util import metrics

        tags = ("service", "tenant")
        self.queued = metrics.Gauge("labubu_scheduler_queued", "Requests waiting for a grant", tag_keys=tags)
        self.in_flight = metrics.Gauge("labubu_scheduler_in_flight", "Granted requests not yet released", tag_keys=tags)
        self.cost = metrics.Counter("labubu_scheduler_granted_cost", "Estimated cost granted", tag_keys=tags)
        self.grants = metrics.Counter("labubu_scheduler_grants", "Requests granted", tag_keys=tags)
        self.wait = metrics.Histogram(
            "labubu_scheduler_wait_seconds",
            "Time from submission to grant",
            boundaries=[0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60],
            tag_keys=("service",),
        )
        self._granted: dict[tuple[str, str], list[float]] = {}
        self._waits: list[tuple[str, float]] = []

    def granted(self, grant: Grant, waited_s: float) -> None:
        """Count a grant in memory; `flush` exports the counts (a grant's answer waits for no exporter)."""
        counts = self._granted.setdefault((grant.service, grant.tenant), [0, 0.0])
        counts[0] += 1
        counts[1] += grant.cost
        self._waits.append((grant.service, waited_s))

    def flush(self, stats: dict[str, Any]) -> None:
        """Export what was counted since the last flush, and the queues' current depths."""
        granted, self._granted = self._granted, {}
        waits, self._waits = self._waits, []
        for (service, tenant), (grants, cost) in granted.items():
            tags = {"service": service, "tenant": tenant}
            self.grants.inc(grants, tags)
            self.cost.inc(cost, tags)
        for service, waited_s in waits:
            self.wait.observe(waited_s, {"service": service})
        for service, state in stats["services"].items():
            for tenant, flow in state["tenants"].items():
                tags = {"service": service, "tenant": tenant}
                self.queued.set(flow["queued"], tags)
                self.in_flight.set(flow["in_flight"], tags)
