"""The fair-share policy: per-service queues ordered by start-time fair queuing, and dual limits.

Plain Python with an explicit clock, so the actor that hosts it, the tests and the benchmark all
drive the same code. The host's loop is: call `dispatch(now)` after every `submit`, `release`,
`cancel` and settings change, and again at `next_wakeup(now)`; start what it returns.

How requests are ordered (one service; each service is independent):
- Each (service, tenant) pair is a *flow* with a virtual time `vt`: the finish tag of its last
  granted request, i.e. the start tag of its next one while it stays backlogged.
- When a flow goes from no waiting request to one, `vt = max(vt, global_vt)`: a tenant that was
  idle comes back at the current virtual time, with no saved-up credit to burst with.
- The flow with the smallest `vt` is served next (ties: the flow queued first). Granting a request
  of cost c sets `global_vt = max(global_vt, vt)` (the start tag in service) and `vt += c/weight`.
  Between two tenants that stay backlogged this keeps `|served_i/w_i - served_j/w_j|` within
  `c_i/w_i + c_j/w_j`, whatever the arrivals (Goyal, Vin & Cheng, SIGCOMM 1996).
- A flow's own requests go by priority, then first come first served. Priority picks which of a
  tenant's requests its turn is spent on; it never changes when the turn comes.
- `low` requests (batch lines, background work) never take a service's last free slot: it is kept
  for a `default` or `critical` request, which then starts at once instead of waiting for a low
  one to finish. When the flow whose turn it is has only low requests waiting, the last slot goes
  to the next flow (by virtual time) that has a more urgent one, or stays free. A model replica
  runs low calls in the background too (deployments/llm.py: a low generation yields the engine at
  its next token), so another tenant's batch delays an interactive call by about one token.
- The cost is an estimate; `release` corrects `vt` by `(actual - estimate)/weight`, so a tenant is
  charged what it used.

Limits: a grant needs a slot in the service's concurrency limit and a token in its rate bucket (if
it has one), and the same from the tenant's own limits, which span all services. A tenant held back
by its own limits is *parked*: its flows leave the service heaps until a release frees a slot or
its bucket refills, so the tenants behind it are served meanwhile (work conservation) and a blocked
tenant costs nothing per dispatch.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from scheduler.buckets import ConcurrencyLimit, TokenBucket
from scheduler.errors import (
    InvalidSettings,
    QuotaExceeded,
    ServiceOverloaded,
    UnknownService,
    UnknownTicket,
)
from scheduler.settings import Priority, ServiceLimits, TenantRecord, TenantSettings

SNAPSHOT_VERSION = 1

# Retry-After bounds: no client should hammer the admission path more often than once a second,
# and none should be told to wait longer than a minute when an admin may lift the limit any time.
_MIN_RETRY_AFTER_S = 1.0
_MAX_RETRY_AFTER_S = 60.0

# Heaps drop stale entries lazily; rebuild one when stale entries outnumber live ones by this
# much, so that memory stays proportional to the live requests.
_COMPACT_SLACK = 64

# Priorities by value and by member (a `str` enum hashes as its value): one dict lookup per submit
# instead of the enum's own constructor.
_PRIORITIES: dict[str, Priority] = {p.value: p for p in Priority}
_RANKS = len(Priority)
_LOW_RANK = Priority.LOW.rank

# How far each release moves a service's average hold time toward its own: the last ten or so count.
_HOLD_SMOOTHING = 0.2


@dataclass(frozen=True)
class Grant:
    """A request that may start now. Run it, then `release(ticket, actual_cost)`."""

    ticket: int
    service: str
    tenant: str
    priority: Priority
    cost: float
    start_tag: float


class _FlowState(Enum):
    IDLE = "idle"  # nothing waiting
    READY = "ready"  # in its service's heap
    PARKED = "parked"  # waiting, but its tenant is at its own limit


@dataclass(eq=False, slots=True)
class _Request:
    ticket: int
    service: str
    tenant: str
    priority: Priority
    cost: float
    granted: bool = False
    # A cancelled request stays in its lane until it reaches the head (or the lanes are compacted):
    # the flag saves a lookup in the scheduler's table of a million requests for every head looked at.
    cancelled: bool = False
    # The tenant's weight when granted: the correction at release must divide by the same weight
    # that the charge at grant did, even if an admin changed it in between.
    weight: float = 1.0
    granted_at: float = 0.0


class _Lane:
    """The waiting requests of one flow and one priority, first come first served: a list and the
    index of its head (about 100 bytes where a deque is 760; a flow per tenant and service adds up).
    """

    __slots__ = ("head", "items")

    def __init__(self) -> None:
        self.items: list[_Request | None] = []
        self.head = 0

    def popleft(self) -> _Request:
        items, head = self.items, self.head
        request = items[head]
        items[head] = None  # a released request must not live on here
        head += 1
        if head >= 32 and 2 * head >= len(items):  # amortised O(1): it moves fewer than it skips
            del items[:head]
            head = 0
        self.head = head
        return request  # type: ignore[return-value]


@dataclass(eq=False, slots=True)
class _Flow:
    service: str
    tenant: str
    vt: float = 0.0
    served_cost: float = 0.0
    queued: int = 0
    in_flight: int = 0
    state: _FlowState = _FlowState.IDLE
    # Bumped whenever the flow enters or leaves its service's heap, so older heap entries are stale.
    version: int = 0
    # One FIFO lane per priority rank, made on first use and dropped when the flow goes idle.
    # Tickets grow with submission, so the head of the first non-empty lane is the next request:
    # priority, then first come first served. Cancelled requests stay until they reach a head or
    # the lanes are compacted.
    lanes: list[_Lane | None] = field(default_factory=lambda: [None] * _RANKS)
    entries: int = 0  # in the lanes, cancelled ones included


class _Service:
    __slots__ = (
        "bucket",
        "concurrency",
        "flows",
        "global_vt",
        "hold_s",
        "limits",
        "name",
        "queued",
        "ready",
        "urgent",
    )

    def __init__(self, name: str, limits: ServiceLimits) -> None:
        self.name = name
        self.limits = limits
        self.concurrency = ConcurrencyLimit(limits.dispatch_limit)
        self.bucket = TokenBucket(limits.rate_per_s, limits.burst) if limits.rate_per_s is not None else None
        self.global_vt = 0.0
        self.queued = 0
        self.urgent = 0  # of `queued`, those more urgent than `low`
        # How long a grant is held, on average of the recent ones (from grant to release), or None
        # before the first: with the slots, how fast the queue goes (`FairScheduler.expected_wait_s`).
        self.hold_s: float | None = None
        self.flows: dict[str, _Flow] = {}
        # (vt, push order, flow version, flow) of READY flows, plus stale entries.
        self.ready: list[tuple[float, int, int, _Flow]] = []

    def is_open(self, now: float) -> bool:
        """Whether the service itself could take one more grant at `now`."""
        concurrency = self.concurrency
        return concurrency.in_flight < concurrency.limit and (self.bucket is None or self.bucket.ready(now))

    def at_last_slot(self) -> bool:
        """Whether one grant more would fill the service: the slot that low requests leave free.
        A service with a single slot keeps none back, or low requests would never run there."""
        concurrency = self.concurrency
        return concurrency.limit >= 2 and concurrency.in_flight + 1 >= concurrency.limit


class _Tenant:
    __slots__ = ("bucket", "concurrency", "name", "parked", "queued", "settings", "wake_at")

    def __init__(self, name: str, settings: TenantSettings) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = ConcurrencyLimit(settings.max_concurrency)
        self.bucket = TokenBucket(settings.rate_per_s, settings.burst)
        self.queued = 0
        # Service name → this tenant's flow there, while the tenant is at its own limit.
        self.parked: dict[str, _Flow] = {}
        # When its rate bucket next allows a grant, while parked on it; inf otherwise.
        self.wake_at = math.inf

    def is_open(self, now: float) -> bool:
        concurrency = self.concurrency
        return concurrency.in_flight < concurrency.limit and self.bucket.ready(now)

    def apply(self, settings: TenantSettings) -> None:
        self.settings = settings
        self.concurrency.limit = settings.max_concurrency
        self.bucket.configure(settings.rate_per_s, settings.burst)


class FairScheduler:
    """Per-service fair queues with per-tenant virtual time, priorities and dual limits.

    `services` maps each service name (matched case-insensitively) to its limits; tenants that were
    never `set_tenant` get `tenant_defaults`. Tickets count up from `first_ticket`.

    Not thread-safe: one caller at a time (an actor's event loop). Every operation is O(log n) in
    the backlogged flows of a service (a request joins and leaves its flow's queue in amortised O(1)),
    except `dispatch`, which is O(services) per call and O(log n) per grant, and the administrative
    `snapshot`, `restore`, `stats` and `tenants`. Memory is linear in the waiting requests.
    """

    def __init__(
        self,
        services: Mapping[str, ServiceLimits],
        tenant_defaults: TenantSettings | None = None,
        *,
        first_ticket: int = 1,
    ) -> None:
        self._services = {name.lower(): _Service(name.lower(), lim) for name, lim in services.items()}
        self._defaults = tenant_defaults or TenantSettings()
        self._configured: dict[str, TenantSettings] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._requests: dict[int, _Request] = {}
        # A restarted host must not hand out the tickets its predecessor did, or a late release from
        # before the restart would end someone else's grant: it starts from a fresh `first_ticket`.
        self._tickets = itertools.count(first_ticket)
        self._push_order = itertools.count()
        # (time, tenant) for tenants parked on their rate bucket, plus stale entries.
        self._wakeups: list[tuple[float, str]] = []

    # ------------------------------------------------------------------ requests

    def submit(
        self,
        service: str,
        tenant: str,
        cost: float,
        *,
        now: float,
        priority: Priority | str = Priority.DEFAULT,
        wait: bool = True,
        max_wait_s: float | None = None,
    ) -> int:
        """Queue a request and return its ticket; `dispatch` says when it may start.

        `cost` is the estimate (> 0) in the service's unit. With `wait=False` (an interactive
        call), a tenant at its own concurrency or rate limit is refused with `QuotaExceeded` instead
        of queueing; the request may still wait its turn in the fair queue. With `max_wait_s`, a
        request whose turn would come later than that (`expected_wait_s`) is refused at once with
        `ServiceOverloaded`, rather than left to wait that long and then be refused.

        Raises `UnknownService`, `QuotaExceeded` (the tenant has `max_queued` waiting),
        `ServiceOverloaded` (the service has its `max_queued` waiting, or no turn within
        `max_wait_s`), `ValueError` (a bad cost or priority).
        """
        svc = self._services.get(service) or self._service(service)
        if not 0.0 < cost < math.inf:  # also refuses NaN
            raise ValueError(f"cost must be a finite number > 0, got {cost!r}")
        priority = _PRIORITIES.get(priority) or Priority(priority)
        ten = self._tenants.get(tenant) or self._tenant(tenant)
        if ten.queued >= ten.settings.max_queued:
            self.check_room(tenant, now)
        if svc.limits.max_queued is not None and svc.queued >= svc.limits.max_queued:
            raise ServiceOverloaded(
                f"service {svc.name!r} has {svc.queued} requests waiting, its limit",
                _MIN_RETRY_AFTER_S,
            )
        if not wait and not ten.is_open(now):
            raise QuotaExceeded(
                f"tenant {tenant!r} is at its concurrency or rate limit",
                self._retry_after(ten, now),
            )
        if max_wait_s is not None and svc.hold_s is not None:
            expected_s = self._expected_wait_s(svc, ten, priority.rank, max_wait_s)
            if expected_s > max_wait_s:
                raise ServiceOverloaded(
                    f"{svc.name} is saturated: its turn would come in about {expected_s:.0f} s, "
                    f"beyond the {max_wait_s:g} s an interactive call waits",
                    min(_MAX_RETRY_AFTER_S, max(_MIN_RETRY_AFTER_S, expected_s - max_wait_s)),
                )

        ticket = next(self._tickets)
        # The scheduler's own copies of the names: a caller's (one string per call, from Ray) are
        # not kept alive per request.
        request = self._requests[ticket] = _Request(ticket, svc.name, ten.name, priority, cost)
        flow = svc.flows.get(tenant) or self._flow(svc, tenant)
        lane = flow.lanes[priority.rank]
        if lane is None:
            lane = flow.lanes[priority.rank] = _Lane()
        lane.items.append(request)
        flow.entries += 1
        flow.queued += 1
        ten.queued += 1
        svc.queued += 1
        if priority.rank < _LOW_RANK:
            svc.urgent += 1
        if flow.state is _FlowState.IDLE:
            # Start tag max(global_vt, tenant_vt): time spent idle earns no credit.
            flow.vt = max(flow.vt, svc.global_vt)
            self._push_ready(svc, flow)
        return ticket

    def dispatch(self, now: float) -> list[Grant]:
        """Grant every request that may start at `now`, in order.

        Work-conserving: it stops only when each service is at its own limit or every tenant
        waiting there is at its own limit. Among services, the one whose next request was
        submitted first goes first, so that a tenant at its own limit shares freed slots across
        services in submission order.
        """
        self._wake_parked(now)
        grants: list[Grant] = []
        # Each service's next request, as (rank, ticket, its flow). A grant changes only its own
        # service's head, and its tenant's limits: so only that service, and the services whose
        # head is the same tenant's, are looked at again, not every service per grant.
        heads: dict[_Service, tuple[int, int, _Flow]] = {}
        for svc in self._services.values():
            concurrency = svc.concurrency
            if svc.ready and concurrency.in_flight < concurrency.limit:  # `_head`'s first test, inline: most are full
                head = self._head(svc, now)
                if head is not None:
                    heads[svc] = head
        while heads:
            best_svc: _Service | None = None
            best: tuple[int, int, _Flow] | None = None
            for svc, head in heads.items():
                if best is None or head < best:  # never equal: tickets are unique
                    best_svc, best = svc, head
            assert best_svc is not None and best is not None
            flow = best[2]
            grants.append(self._grant(best_svc, flow, best[0], now))
            head = self._head(best_svc, now)
            if head is None:
                del heads[best_svc]
            else:
                heads[best_svc] = head
            if not self._tenants[flow.tenant].is_open(now):  # its heads elsewhere are parked now
                tenant = flow.tenant
                for svc in [s for s, head in heads.items() if head[2].tenant == tenant]:
                    head = self._head(svc, now)
                    if head is None:
                        del heads[svc]
                    else:
                        heads[svc] = head
        return grants

    def release(self, ticket: int, actual_cost: float | None = None, *, now: float | None = None) -> None:
        """End a granted request, charging `actual_cost` instead of the estimate when given.

        `now`: when the call ended, which times how long the service's grants are held. Without
        it (a lease that ran out, a caller that died) the hold says nothing of the service's pace.

        Raises `UnknownTicket` for a ticket that is not granted (a waiting one is cancelled instead).
        """
        request = self._requests.get(ticket)
        if request is None or not request.granted:
            raise UnknownTicket(f"ticket {ticket} is not granted")
        if actual_cost is not None:
            if not (math.isfinite(actual_cost) and actual_cost >= 0):
                raise ValueError(f"actual_cost must be a finite number >= 0, got {actual_cost!r}")
            self._charge(request, actual_cost - request.cost)
        if now is not None:
            svc = self._services[request.service]
            held_s = max(0.0, now - request.granted_at)
            svc.hold_s = held_s if svc.hold_s is None else svc.hold_s + _HOLD_SMOOTHING * (held_s - svc.hold_s)
        self._finish(request)

    def expected_wait_s(self, service: str, tenant: str, priority: Priority | str = Priority.DEFAULT) -> float | None:
        """About how long a request submitted now would wait for its turn, or None before the
        service's first release (its pace is not known yet)."""
        svc = self._service(service)
        if svc.hold_s is None:
            return None
        rank = (_PRIORITIES.get(priority) or Priority(priority)).rank
        return self._expected_wait_s(svc, self._tenants.get(tenant) or self._tenant(tenant), rank, 0.0)

    def cancel(self, ticket: int) -> bool:
        """Withdraw a request. A waiting one leaves its queue; a granted one frees its slots and is
        refunded in full, since the caller gave up before using the grant (a call that ran, even in
        part, is released with its cost instead).

        Returns False for a ticket that is not known (released, cancelled, or never issued), so
        that racing cancellations are harmless.
        """
        request = self._requests.get(ticket)
        if request is None:
            return False
        if request.granted:
            self._charge(request, -request.cost)
            self._finish(request)
            return True
        del self._requests[ticket]
        request.cancelled = True
        svc = self._services[request.service]
        flow = svc.flows[request.tenant]
        ten = self._tenants[request.tenant]
        flow.queued -= 1
        ten.queued -= 1
        svc.queued -= 1
        if request.priority.rank < _LOW_RANK:
            svc.urgent -= 1
        if flow.queued == 0:
            ten.parked.pop(svc.name, None)
            self._set_idle(flow)
        elif flow.entries > 2 * flow.queued + _COMPACT_SLACK:
            for lane in flow.lanes:
                if lane is not None:
                    lane.items = [r for r in lane.items[lane.head :] if r is not None and not r.cancelled]
                    lane.head = 0
            flow.entries = flow.queued
        return True

    def check_room(self, tenant: str, now: float) -> None:
        """Raise `QuotaExceeded` if the tenant has `max_queued` requests waiting: a workflow or task
        submitted now would only add to them."""
        ten = self._tenant(tenant)
        if ten.queued >= ten.settings.max_queued:
            raise QuotaExceeded(
                f"tenant {tenant!r} has {ten.queued} requests waiting, its limit",
                self._retry_after(ten, now),
                [{"field": "max_queued", "reason": str(ten.settings.max_queued)}],
            )

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time at which a rate bucket lets a waiting request through, or None when
        only a release (or a settings change) can. Call `dispatch` then."""
        while self._wakeups:
            at, name = self._wakeups[0]
            if self._tenants[name].wake_at == at:
                break
            heapq.heappop(self._wakeups)
        times = [self._wakeups[0][0]] if self._wakeups else []
        for svc in self._services.values():
            if svc.ready and svc.bucket is not None and svc.concurrency.available:
                wait = svc.bucket.wait_s(now)
                # A full bucket and a free slot, yet `dispatch` granted nothing: the slot is the one
                # kept from low requests, and only a submit or a release can change that.
                if math.isfinite(wait) and not (wait == 0 and svc.at_last_slot()):
                    times.append(now + wait)
        return min(times) if times else None

    # ------------------------------------------------------------------ settings

    def set_tenant(self, tenant: str, settings: TenantSettings) -> TenantRecord:
        """Configure a tenant; it takes effect on the next dispatch. Its virtual times are kept."""
        self._configured[tenant] = settings
        ten = self._tenants.get(tenant)
        if ten is not None:
            ten.apply(settings)
            # The new limits may be looser: let the next dispatch look at its flows again.
            self._unpark(ten)
        return self.tenant(tenant)

    def tenant(self, tenant: str) -> TenantRecord:
        """A tenant's settings: its own if configured, else the defaults."""
        settings = self._configured.get(tenant)
        if settings is None:
            return TenantRecord(tenant, self._defaults, configured=False)
        return TenantRecord(tenant, settings, configured=True)

    def tenants(self) -> list[TenantRecord]:
        """Every tenant configured or seen, by name."""
        return [self.tenant(name) for name in sorted(self._configured.keys() | self._tenants.keys())]

    def set_dispatch_limit(self, service: str, limit: int) -> bool:
        """Follow a service's capacity (replicas × `max_ongoing_requests`); whether it changed.
        Lowering it below the requests in flight cancels none: new grants wait until enough are
        released."""
        svc = self._service(service)
        if svc.concurrency.limit == limit:
            return False
        svc.limits = replace(svc.limits, dispatch_limit=limit)
        svc.concurrency.limit = limit
        return True

    def configure(self, services: Mapping[str, ServiceLimits], tenant_defaults: TenantSettings) -> None:
        """Apply a new configuration (a redeploy) to a running scheduler.

        Queues, grants, virtual times and the tenants an admin configured are kept. Tenants on the
        defaults take the new ones. A known service takes its new rate and queue limits but keeps
        its dispatch limit, which follows the replicas (`set_dispatch_limit`); a new service is
        added; a service no longer named stays, so that its requests in flight can finish.
        """
        self._defaults = tenant_defaults
        for name, ten in self._tenants.items():
            if name not in self._configured:
                ten.apply(tenant_defaults)
                self._unpark(ten)
        for name, limits in services.items():
            svc = self._services.get(name.lower())
            if svc is None:
                self._services[name.lower()] = _Service(name.lower(), limits)
                continue
            svc.limits = replace(limits, dispatch_limit=svc.limits.dispatch_limit)
            if limits.rate_per_s is None:
                svc.bucket = None
            elif svc.bucket is None:
                svc.bucket = TokenBucket(limits.rate_per_s, limits.burst)
            else:
                svc.bucket.configure(limits.rate_per_s, limits.burst)

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable tenant settings and virtual times, for `restore` after a restart.

        Requests are not included: after a restart their callers submit again.
        """
        return {
            "version": SNAPSHOT_VERSION,
            "tenants": {name: s.to_dict() for name, s in sorted(self._configured.items())},
            "services": {
                svc.name: {
                    "global_vt": svc.global_vt,
                    "tenants": {
                        name: {"vt": flow.vt, "served_cost": flow.served_cost}
                        for name, flow in sorted(svc.flows.items())
                    },
                }
                for svc in self._services.values()
            },
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a `snapshot` into a scheduler that has no requests yet. Services the snapshot
        names but this scheduler lacks are skipped (a service was removed from the config)."""
        if self._requests:
            raise RuntimeError("restore needs a scheduler with no requests")
        if state.get("version") != SNAPSHOT_VERSION:
            raise InvalidSettings(f"unsupported snapshot version {state.get('version')!r}")
        for name, settings in state.get("tenants", {}).items():
            self.set_tenant(name, TenantSettings.from_dict(settings))
        for service, saved in state.get("services", {}).items():
            svc = self._services.get(service)
            if svc is None:
                continue
            svc.global_vt = float(saved["global_vt"])
            for name, flow_state in saved.get("tenants", {}).items():
                flow = self._flow(svc, name)
                flow.vt = float(flow_state["vt"])
                flow.served_cost = float(flow_state["served_cost"])

    def stats(self) -> dict[str, Any]:
        """The body of `GET /v1/admin/scheduler`: per service, its queue, its load, its virtual
        time, and each tenant's virtual time, cost served (corrected), waiting and granted."""
        return {
            "services": {
                svc.name: {
                    "queued": svc.queued,
                    "in_flight": svc.concurrency.in_flight,
                    "dispatch_limit": svc.concurrency.limit,
                    "global_vt": svc.global_vt,
                    "tenants": {
                        name: {
                            "vt": flow.vt,
                            "served_cost": flow.served_cost,
                            "queued": flow.queued,
                            "in_flight": flow.in_flight,
                        }
                        for name, flow in sorted(svc.flows.items())
                    },
                }
                for svc in self._services.values()
            }
        }

    # ------------------------------------------------------------------ internals

    def _service(self, name: str) -> _Service:
        svc = self._services.get(name.lower())
        if svc is None:
            raise UnknownService(
                f"unknown service {name!r}",
                [{"field": "service", "reason": f"not one of {sorted(self._services)}"}],
            )
        return svc

    def _tenant(self, name: str) -> _Tenant:
        ten = self._tenants.get(name)
        if ten is None:
            ten = self._tenants[name] = _Tenant(name, self.tenant(name).settings)
        return ten

    def _flow(self, svc: _Service, tenant: str) -> _Flow:
        flow = svc.flows.get(tenant)
        if flow is None:
            flow = svc.flows[tenant] = _Flow(svc.name, tenant)
        return flow

    def _expected_wait_s(self, svc: _Service, ten: _Tenant, rank: int, bound_s: float) -> float:
        """The requests that would go before one of `ten` at `rank`, times the service's pace (a
        grant's hold over its slots).

        Fair queuing serves the backlogged flows in turns: while this tenant's request and the
        ones of its own it waits behind go, each other flow sends at most as many, in proportion to
        the weights, and no more than it has waiting. So another tenant's long backlog does not
        make this one's wait long. Checked only past `bound_s` by the cheap upper bound (every
        waiting request first), so that the scan over the service's backlogged flows happens only
        when the service is that far behind.
        """
        assert svc.hold_s is not None
        busy = not svc.concurrency.available
        per_request_s = svc.hold_s / max(1, svc.concurrency.limit)
        if (svc.queued + busy) * per_request_s <= bound_s:
            return (svc.queued + busy) * per_request_s
        flow = svc.flows.get(ten.name)
        own = 1 + (sum(_lane_length(flow.lanes[r]) for r in range(rank + 1)) if flow is not None else 0)
        turns = own / ten.settings.weight
        ahead: float = own - 1
        for _, _, version, other in svc.ready:
            if version == other.version and other is not flow:
                ahead += min(other.queued, turns * self._tenants[other.tenant].settings.weight)
        return (ahead + busy) * per_request_s

    def _retry_after(self, ten: _Tenant, now: float) -> float:
        return min(_MAX_RETRY_AFTER_S, max(_MIN_RETRY_AFTER_S, ten.bucket.wait_s(now)))

    def _push_ready(self, svc: _Service, flow: _Flow) -> None:
        flow.state = _FlowState.READY
        flow.version += 1
        heapq.heappush(svc.ready, (flow.vt, next(self._push_order), flow.version, flow))
        if len(svc.ready) > 2 * len(svc.flows) + _COMPACT_SLACK:
            svc.ready = [entry for entry in svc.ready if entry[2] == entry[3].version]
            heapq.heapify(svc.ready)

    def _set_idle(self, flow: _Flow) -> None:
        flow.state = _FlowState.IDLE
        flow.version += 1
        # Whatever the lanes still hold was cancelled: drop them with it.
        flow.lanes = [None] * _RANKS
        flow.entries = 0

    def _head(self, svc: _Service, now: float) -> tuple[int, int, _Flow] | None:
        """The service's next request, as (priority rank, ticket, flow), if it may start at `now`:
        the head of the READY flow with the smallest virtual time whose tenant may take a grant,
        parking the flows of tenants at their own limits on the way."""
        ready = svc.ready
        if not ready or not svc.is_open(now):
            return None
        tenants = self._tenants
        while True:
            if not ready:
                return None
            _, _, version, flow = ready[0]
            if version != flow.version:
                heapq.heappop(ready)
                continue
            ten = tenants[flow.tenant]
            if ten.is_open(now):
                break
            heapq.heappop(ready)
            self._park(ten, flow, now)
        rank, ticket = self._first_waiting(flow)
        if rank == _LOW_RANK and svc.at_last_slot():
            return self._urgent_head(svc, now)
        return (rank, ticket, flow)

    def _urgent_head(self, svc: _Service, now: float) -> tuple[int, int, _Flow] | None:
        """The head of the READY flow with the smallest virtual time whose next request is more
        urgent than `low`, among tenants that may take a grant: who gets a service's last slot.
        A scan of the service's flows, made only when the last slot is free and the flow whose
        turn it is has only low requests waiting (`urgent` counts the others, so mostly none)."""
        if svc.urgent == 0:
            return None
        tenants = self._tenants
        best: tuple[float, int, int, int, _Flow] | None = None
        for vt, order, version, flow in svc.ready:
            if version != flow.version or (best is not None and (vt, order) >= best[:2]):
                continue
            if flow.lanes[_LOW_RANK] is not None and not any(flow.lanes[:_LOW_RANK]):
                continue  # only low lanes: its head is low
            ten = tenants[flow.tenant]
            if not ten.is_open(now):
                self._park(ten, flow, now)  # as `_head` does: its tenant's wakeup brings it back
                continue
            rank, ticket = self._first_waiting(flow)
            if rank < _LOW_RANK:
                best = (vt, order, rank, ticket, flow)
        return None if best is None else (best[2], best[3], best[4])

    @staticmethod
    def _first_waiting(flow: _Flow) -> tuple[int, int]:
        """(priority rank, ticket) of a waiting flow's next request, dropping cancelled heads."""
        for rank, lane in enumerate(flow.lanes):
            if lane is not None:
                items = lane.items
                while lane.head < len(items):
                    request = items[lane.head]
                    assert request is not None  # slots before `head` only are None
                    if not request.cancelled:
                        return (rank, request.ticket)
                    lane.popleft()
                    flow.entries -= 1
        raise AssertionError("a READY flow has no waiting request")

    def _grant(self, svc: _Service, flow: _Flow, rank: int, now: float) -> Grant:
        """Grant the head request of `flow`, in lane `rank`, as `_head` just found them (`flow`'s
        entry is on top of the service's heap, or, for the last slot, anywhere in it)."""
        request = flow.lanes[rank].popleft()  # type: ignore[union-attr]  # `_head` found it there
        flow.entries -= 1
        ticket = request.ticket
        ten = self._tenants[flow.tenant]
        ten.concurrency.acquire()
        ten.bucket.take(now)
        svc.concurrency.acquire()
        if svc.bucket is not None:
            svc.bucket.take(now)

        start = flow.vt
        if start > svc.global_vt:
            svc.global_vt = start
        request.granted = True
        request.granted_at = now
        request.weight = weight = ten.settings.weight
        cost = request.cost
        flow.vt = start + cost / weight
        flow.served_cost += cost
        flow.queued -= 1
        flow.in_flight += 1
        ten.queued -= 1
        svc.queued -= 1
        if rank < _LOW_RANK:
            svc.urgent -= 1
        top = svc.ready[0]
        on_top = top[3] is flow and top[2] == flow.version
        if flow.queued:
            # `_push_ready` with the flow's old entry replaced in one sift rather than popped first.
            flow.version += 1
            entry = (flow.vt, next(self._push_order), flow.version, flow)
            if on_top:
                heapq.heapreplace(svc.ready, entry)
            else:  # its old entry, further down, is stale now
                heapq.heappush(svc.ready, entry)
        else:
            if on_top:
                heapq.heappop(svc.ready)
            self._set_idle(flow)  # a version bump: any entry of it left in the heap is stale
        return Grant(ticket, svc.name, flow.tenant, request.priority, request.cost, start)

    def _charge(self, request: _Request, correction: float) -> None:
        svc = self._services[request.service]
        flow = svc.flows[request.tenant]
        flow.vt += correction / request.weight
        flow.served_cost += correction
        if flow.state is _FlowState.READY:
            self._push_ready(svc, flow)  # its heap key changed

    def _finish(self, request: _Request) -> None:
        del self._requests[request.ticket]
        svc = self._services[request.service]
        ten = self._tenants[request.tenant]
        svc.flows[request.tenant].in_flight -= 1
        svc.concurrency.release()
        ten.concurrency.release()
        if ten.parked and ten.concurrency.available:
            self._unpark(ten)

    def _park(self, ten: _Tenant, flow: _Flow, now: float) -> None:
        flow.state = _FlowState.PARKED
        flow.version += 1
        ten.parked[flow.service] = flow
        if ten.concurrency.available:  # so it is the rate bucket: wake up when it refills
            at = now + ten.bucket.wait_s(now)
            if at < ten.wake_at:
                ten.wake_at = at
                heapq.heappush(self._wakeups, (at, ten.name))
                if len(self._wakeups) > 2 * len(self._tenants) + _COMPACT_SLACK:
                    self._wakeups = [w for w in self._wakeups if self._tenants[w[1]].wake_at == w[0]]
                    heapq.heapify(self._wakeups)

    def _unpark(self, ten: _Tenant) -> None:
        for flow in ten.parked.values():
            self._push_ready(self._services[flow.service], flow)
        ten.parked.clear()
        ten.wake_at = math.inf

    def _wake_parked(self, now: float) -> None:
        while self._wakeups and self._wakeups[0][0] <= now:
            at, name = heapq.heappop(self._wakeups)
            ten = self._tenants[name]
            if ten.wake_at == at:
                self._unpark(ten)


def _lane_length(lane: _Lane | None) -> int:
    """The requests in a lane, cancelled ones that have not reached its head included."""
    return 0 if lane is None else len(lane.items) - lane.head
