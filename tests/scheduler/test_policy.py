from __future__ import annotations

import heapq
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from scheduler.buckets import TokenBucket
from scheduler.errors import InvalidSettings, QuotaExceeded, ServiceOverloaded, UnknownService, UnknownTicket
from scheduler.policy import FairScheduler, Grant
from scheduler.settings import Priority, ServiceLimits, TenantSettings

# Tenant limits that never bind, for the properties of the fair queue alone.
UNLIMITED = TenantSettings(max_concurrency=100_000, rate_per_s=1e9, burst=1e9, max_queued=100_000)


def scheduler(
    dispatch_limit: int = 1,
    defaults: TenantSettings = UNLIMITED,
    **services: ServiceLimits,
) -> FairScheduler:
    return FairScheduler(services or {"llm": ServiceLimits(dispatch_limit)}, defaults)


def tenants_of(grants: Sequence[Grant]) -> str:
    return "".join(g.tenant for g in grants)


# ---------------------------------------------------------------- a simulated clock


@dataclass(frozen=True)
class Arrival:
    time: float
    tenant: str
    cost: float
    run_s: float = 1.0
    priority: Priority = Priority.DEFAULT
    service: str = "llm"


@dataclass(frozen=True)
class Submitted:
    time: float
    ticket: int
    arrival: Arrival


@dataclass(frozen=True)
class Granted:
    time: float
    grant: Grant


@dataclass
class Simulation:
    """Drives a scheduler as the actor will: dispatch after every change and at `next_wakeup`;
    each granted request runs `run_s` and is then released at its estimated cost."""

    scheduler: FairScheduler
    log: list[Submitted | Granted] = field(default_factory=list)
    waiting: dict[int, Arrival] = field(default_factory=dict)
    in_flight: dict[int, Arrival] = field(default_factory=dict)

    def run(
        self,
        arrivals: Sequence[Arrival],
        after_dispatch: Callable[[float, list[Grant]], None] | None = None,
        probe: bool = False,
    ) -> None:
        """With `probe`, also call `dispatch` halfway between events, where `next_wakeup` promised
        that nothing could start: it must grant nothing."""
        pending = sorted(arrivals, key=lambda a: a.time)
        index = 0
        running: list[tuple[float, int]] = []
        wake: float | None = None
        while True:
            times = [t for t in (wake, running[0][0] if running else None) if t is not None]
            if index < len(pending):
                times.append(pending[index].time)
            if not times:
                return
            now = min(times)
            while running and running[0][0] <= now:
                _, ticket = heapq.heappop(running)
                del self.in_flight[ticket]
                self.scheduler.release(ticket)
            while index < len(pending) and pending[index].time <= now:
                arrival = pending[index]
                index += 1
                ticket = self.scheduler.submit(
                    arrival.service, arrival.tenant, arrival.cost, now=now, priority=arrival.priority
                )
                self.waiting[ticket] = arrival
                self.log.append(Submitted(now, ticket, arrival))
            grants = self.scheduler.dispatch(now)
            for grant in grants:
                arrival = self.waiting.pop(grant.ticket)
                self.in_flight[grant.ticket] = arrival
                self.log.append(Granted(now, grant))
                heapq.heappush(running, (now + arrival.run_s, grant.ticket))
            if after_dispatch is not None:
                after_dispatch(now, grants)
            wake = self.scheduler.next_wakeup(now)
            assert wake is None or wake > now
            if probe:
                following = [t for t in (wake, running[0][0] if running else None) if t is not None]
                if index < len(pending):
                    following.append(pending[index].time)
                midway = (now + min(following)) / 2 if following else now + 1000.0
                if midway > now:
                    assert self.scheduler.dispatch(midway) == [], f"a grant was due before {midway}"

    def grants(self) -> list[Granted]:
        return [event for event in self.log if isinstance(event, Granted)]


def largest_costs(log: Sequence[Submitted | Granted]) -> dict[str, float]:
    largest: dict[str, float] = defaultdict(float)
    for event in log:
        if isinstance(event, Submitted):
            largest[event.arrival.tenant] = max(largest[event.arrival.tenant], event.arrival.cost)
    return largest


def check_weighted_gap(log: Sequence[Submitted | Granted], weights: Mapping[str, float]) -> float:
    """Assert the SFQ bound on every pair of tenants while both are waiting, counting each
    request's cost when granted: |S_i/w_i - S_j/w_j| <= c_i/w_i + c_j/w_j with c the largest
    request of each. Returns the largest gap seen, in units of max cost / min weight."""
    max_cost = largest_costs(log)
    waiting: Counter[str] = Counter()
    served: dict[tuple[str, str], dict[str, float]] = {}
    worst = 0.0
    unit = max(max_cost.values()) / min(weights.values())
    for event in log:
        if isinstance(event, Submitted):
            tenant = event.arrival.tenant
            waiting[tenant] += 1
            if waiting[tenant] == 1:
                for other in waiting:
                    if other != tenant and waiting[other]:
                        served[tuple(sorted((tenant, other)))] = {tenant: 0.0, other: 0.0}  # type: ignore[index]
            continue
        grant = event.grant
        for pair, service in served.items():
            if grant.tenant in pair:
                service[grant.tenant] += grant.cost
                i, j = pair
                gap = abs(service[i] / weights[i] - service[j] / weights[j])
                bound = max_cost[i] / weights[i] + max_cost[j] / weights[j]
                assert gap <= bound + 1e-9 * (1 + bound), (pair, service, gap, bound)
                worst = max(worst, gap / unit)
        waiting[grant.tenant] -= 1
        if not waiting[grant.tenant]:
            served = {pair: s for pair, s in served.items() if grant.tenant not in pair}
    return worst


def check_no_starvation(log: Sequence[Submitted | Granted], weights: Mapping[str, float]) -> None:
    """While a tenant waits, each other tenant j gets at most `w_j × c_i/w_i + c_j` of cost
    before the tenant's next grant (c: the largest request of each)."""
    max_cost = largest_costs(log)
    waiting: Counter[str] = Counter()
    others_served: dict[str, defaultdict[str, float]] = {}
    for event in log:
        if isinstance(event, Submitted):
            tenant = event.arrival.tenant
            waiting[tenant] += 1
            others_served.setdefault(tenant, defaultdict(float))
            continue
        tenant = event.grant.tenant
        waiting[tenant] -= 1
        others_served[tenant] = defaultdict(float)
        for starved, got in others_served.items():
            if starved != tenant and waiting[starved]:
                got[tenant] += event.grant.cost
                bound = weights[tenant] * max_cost[starved] / weights[starved] + max_cost[tenant]
                assert got[tenant] <= bound + 1e-9 * bound, (starved, tenant, got[tenant], bound)


# ---------------------------------------------------------------- strategies

TENANTS = "abcd"
times = st.integers(0, 60).map(lambda x: x / 4)


@st.composite
def workloads(draw: st.DrawFn, max_tenants: int = 4) -> tuple[dict[str, float], list[Arrival], int]:
    count = draw(st.integers(2, max_tenants))
    names = TENANTS[:count]
    weights = {t: draw(st.sampled_from([0.25, 0.5, 1.0, 1.5, 3.0, 7.0])) for t in names}
    arrivals = draw(
        st.lists(
            st.builds(
                Arrival,
                time=times,
                tenant=st.sampled_from(names),
                cost=st.floats(0.5, 20.0),
                run_s=st.floats(0.1, 3.0),
            ),
            min_size=2,
            max_size=80,
        )
    )
    return weights, arrivals, draw(st.integers(1, 3))


def weighted(weights: Mapping[str, float], dispatch_limit: int) -> FairScheduler:
    s = scheduler(dispatch_limit)
    for tenant, weight in weights.items():
        s.set_tenant(tenant, UNLIMITED.merged({"weight": weight}))
    return s


# ---------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_property_weighted_service_gap_stays_within_two_requests(
    workload: tuple[dict[str, float], list[Arrival], int],
) -> None:
    weights, arrivals, dispatch_limit = workload
    sim = Simulation(weighted(weights, dispatch_limit))
    sim.run(arrivals)
    assert check_weighted_gap(sim.log, weights) <= 2.0 + 1e-9


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_property_no_starvation(workload: tuple[dict[str, float], list[Arrival], int]) -> None:
    weights, arrivals, dispatch_limit = workload
    sim = Simulation(weighted(weights, dispatch_limit))
    sim.run(arrivals)
    assert len(sim.grants()) == len(arrivals)  # everything is served in the end ...
    check_no_starvation(sim.log, weights)  # ... and nobody waits behind more than its bound


@settings(max_examples=100, deadline=None)
@given(
    weights=st.tuples(st.sampled_from([0.5, 1.0, 3.0]), st.sampled_from([0.5, 1.0, 3.0])),
    backlog_costs=st.lists(st.floats(1.0, 10.0), min_size=1, max_size=20),
    early=st.lists(st.floats(1.0, 10.0), min_size=1, max_size=3),
    late=st.lists(st.floats(1.0, 10.0), min_size=1, max_size=20),
    away_s=st.floats(5.0, 50.0),
    dispatch_limit=st.integers(1, 3),
)
def test_property_a_returning_idle_tenant_catches_up_by_at_most_one_request(
    weights: tuple[float, float],
    backlog_costs: list[float],
    early: list[float],
    late: list[float],
    away_s: float,
    dispatch_limit: int,
) -> None:
    w = {"a": weights[0], "b": weights[1]}
    # a is backlogged throughout (more than the service can finish before b is done); b shows up
    # at 0, leaves, and comes back after `away_s`.
    backlog = int((away_s + 20) * dispatch_limit / 0.5)
    arrivals = [
        Arrival(0.0, "a", cost, run_s=0.5) for cost in itertools.islice(itertools.cycle(backlog_costs), backlog)
    ]
    arrivals += [Arrival(0.0, "b", cost, run_s=0.5) for cost in early]
    arrivals += [Arrival(away_s, "b", cost, run_s=0.5) for cost in late]
    sim = Simulation(weighted(w, dispatch_limit))
    sim.run(arrivals)
    # b was really idle: everything it sent early was served before it came back.
    assume(sum(1 for g in sim.grants() if g.grant.tenant == "b" and g.time < away_s) == len(early))

    after_return = [g.grant for g in sim.grants() if g.time >= away_s]
    first_a = next((i for i, g in enumerate(after_return) if g.tenant == "a"), len(after_return))
    catch_up = sum(g.cost for g in after_return[:first_a] if g.tenant == "b") / w["b"]
    # Before a is served again, b gets what a's last grant was ahead by, plus its own one request.
    assert catch_up <= max(backlog_costs) / w["a"] + max(late) / w["b"] + 1e-9
    check_weighted_gap(sim.log, w)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    costs=st.fixed_dictionaries({t: st.floats(1.0, 10.0) for t in "abc"}),
    weights=st.fixed_dictionaries({t: st.sampled_from([0.5, 1.0, 2.0]) for t in "abc"}),
    dispatch_limit=st.integers(1, 2),
)
def test_property_priorities_order_only_a_tenants_own_requests(
    data: st.DataObject, costs: dict[str, float], weights: dict[str, float], dispatch_limit: int
) -> None:
    plan = data.draw(st.lists(st.tuples(times, st.sampled_from("abc"), st.sampled_from(Priority)), max_size=60))
    with_priorities = [Arrival(t, tenant, costs[tenant], 1.0, priority) for t, tenant, priority in plan]
    without = [Arrival(t, tenant, costs[tenant], 1.0) for t, tenant, _ in plan]

    sim = Simulation(weighted(weights, dispatch_limit))
    sim.run(with_priorities)
    plain = Simulation(weighted(weights, dispatch_limit))
    plain.run(without)
    # Which tenant goes when does not depend on priorities (with one slot: with more, low requests
    # leave the last one free, test_low_requests_leave_the_last_slot_free) ...
    if dispatch_limit == 1:
        assert tenants_of([g.grant for g in sim.grants()]) == tenants_of([g.grant for g in plain.grants()])

    # ... and each grant is its tenant's most urgent waiting request, first come first served.
    waiting: dict[str, set[tuple[int, int]]] = {t: set() for t in "abc"}
    for event in sim.log:
        if isinstance(event, Submitted):
            waiting[event.arrival.tenant].add((event.arrival.priority.rank, event.ticket))
        else:
            key = (event.grant.priority.rank, event.grant.ticket)
            assert key == min(waiting[event.grant.tenant])
            waiting[event.grant.tenant].remove(key)


@st.composite
def limited_workloads(draw: st.DrawFn) -> tuple[dict[str, TenantSettings], dict[str, ServiceLimits], list[Arrival]]:
    names = TENANTS[: draw(st.integers(1, 4))]
    tenants = {
        t: TenantSettings(
            weight=draw(st.sampled_from([0.5, 1.0, 2.0])),
            max_concurrency=draw(st.integers(0, 3)),
            rate_per_s=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 100.0])),
            burst=draw(st.sampled_from([0.0, 1.0, 2.0, 5.0])),
            max_queued=10_000,
        )
        for t in names
    }
    services = {
        s: ServiceLimits(
            draw(st.integers(1, 4)),
            rate_per_s=draw(st.sampled_from([None, 0.5, 2.0])),
            burst=draw(st.sampled_from([1.0, 3.0])),
        )
        for s in ("llm", "tts")
    }
    arrivals = draw(
        st.lists(
            st.builds(
                Arrival,
                time=times,
                tenant=st.sampled_from(names),
                cost=st.floats(0.5, 5.0),
                run_s=st.floats(0.1, 4.0),
                priority=st.sampled_from(Priority),
                service=st.sampled_from(["llm", "tts"]),
            ),
            max_size=60,
        )
    )
    return tenants, services, arrivals


@settings(max_examples=150, deadline=None)
@given(limited_workloads())
def test_property_work_conservation_limits_and_buckets(
    workload: tuple[dict[str, TenantSettings], dict[str, ServiceLimits], list[Arrival]],
) -> None:
    tenants, services, arrivals = workload
    s = FairScheduler(services)
    for tenant, tenant_settings in tenants.items():
        s.set_tenant(tenant, tenant_settings)
    sim = Simulation(s)
    # Replicas of the buckets, taken from at each grant as the scheduler's own must be.
    tenant_buckets = {t: TokenBucket(x.rate_per_s, x.burst) for t, x in tenants.items()}
    service_buckets = {n: TokenBucket(x.rate_per_s, x.burst) for n, x in services.items() if x.rate_per_s is not None}
    granted_at: dict[str, list[float]] = {name: [] for name in [*tenants, *services]}

    def check(now: float, grants: list[Grant]) -> None:
        for grant in grants:
            for bucket in (tenant_buckets[grant.tenant], service_buckets.get(grant.service)):
                if bucket is not None:
                    bucket.take(now)  # raises if the scheduler granted past the bucket
            granted_at[grant.tenant].append(now)
            granted_at[grant.service].append(now)
        busy_tenant = Counter(a.tenant for a in sim.in_flight.values())
        busy_service = Counter(a.service for a in sim.in_flight.values())
        for tenant, count in busy_tenant.items():
            assert count <= tenants[tenant].max_concurrency
        for name, limits in services.items():
            assert busy_service[name] <= limits.dispatch_limit
            bucket = service_buckets.get(name)
            if busy_service[name] == limits.dispatch_limit or (bucket is not None and not bucket.ready(now)):
                continue
            # The one slot that low requests leave free: free while only low ones wait there.
            last_slot = limits.dispatch_limit >= 2 and busy_service[name] + 1 == limits.dispatch_limit
            # The service could take more: then every tenant waiting on it is at its own limit.
            for arrival in sim.waiting.values():
                if arrival.service == name and not (last_slot and arrival.priority is Priority.LOW):
                    blocked = busy_tenant[arrival.tenant] >= tenants[arrival.tenant].max_concurrency
                    assert blocked or not tenant_buckets[arrival.tenant].ready(now), (now, arrival)

    sim.run(arrivals, after_dispatch=check, probe=True)

    for name, stamps in granted_at.items():
        limit = tenants.get(name) or services[name]
        if limit.rate_per_s is None:
            continue
        capacity = max(limit.burst, 1.0)
        for first, last in itertools.combinations(range(len(stamps)), 2):
            assert last - first + 1 <= limit.rate_per_s * (stamps[last] - stamps[first]) + capacity + 1e-6
    # Whatever is left can never start: its tenant is suspended or out of tokens for good.
    for arrival in sim.waiting.values():
        settings_ = tenants[arrival.tenant]
        assert settings_.max_concurrency == 0 or (
            settings_.rate_per_s == 0.0 and not tenant_buckets[arrival.tenant].ready(1e9)
        )


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("submit"), st.sampled_from("abc"), st.sampled_from(["llm", "tts"]), st.floats(0.5, 9)),
            st.tuples(st.just("cancel"), st.integers(0, 200)),
            st.tuples(st.just("release"), st.integers(0, 200), st.floats(0.0, 20.0)),
            st.tuples(st.just("dispatch"), st.floats(0.0, 2.0)),
        ),
        max_size=150,
    )
)
def test_property_counts_stay_consistent_under_any_operations(ops: list[tuple[object, ...]]) -> None:
    s = FairScheduler(
        {"llm": ServiceLimits(2), "tts": ServiceLimits(1)},
        TenantSettings(max_concurrency=2, rate_per_s=5.0, burst=2.0, max_queued=20),
    )
    now = 0.0
    waiting: dict[int, tuple[str, str]] = {}
    granted: dict[int, tuple[str, str]] = {}
    served: Counter[tuple[str, str]] = Counter()
    issued: list[int] = []
    for op in ops:
        if op[0] == "submit":
            _, tenant, service, cost = op
            try:
                ticket = s.submit(str(service), str(tenant), float(cost), now=now)  # type: ignore[arg-type]
            except QuotaExceeded:
                assert sum(1 for t, _ in waiting.values() if t == tenant) == 20
                continue
            issued.append(ticket)
            waiting[ticket] = (str(tenant), str(service))
        elif op[0] == "cancel" and issued:
            ticket = issued[int(op[1]) % len(issued)]  # type: ignore[call-overload]
            known = ticket in waiting or ticket in granted
            assert s.cancel(ticket) == known
            waiting.pop(ticket, None)
            granted.pop(ticket, None)
        elif op[0] == "release" and issued:
            ticket = issued[int(op[1]) % len(issued)]  # type: ignore[call-overload]
            if ticket in granted:
                s.release(ticket, float(op[2]))  # type: ignore[arg-type]
                del granted[ticket]
            else:
                with pytest.raises(UnknownTicket):
                    s.release(ticket)
        elif op[0] == "dispatch":
            now += float(op[1])  # type: ignore[arg-type]
            for grant in s.dispatch(now):
                key = waiting.pop(grant.ticket)
                assert key == (grant.tenant, grant.service)
                granted[grant.ticket] = key
                served[key] += 1

        stats = s.stats()["services"]
        for service in ("llm", "tts"):
            entry = stats[service]
            assert entry["queued"] == sum(1 for _, x in waiting.values() if x == service)
            assert entry["in_flight"] == sum(1 for _, x in granted.values() if x == service)
            for tenant, flow in entry["tenants"].items():
                assert flow["queued"] == sum(1 for k in waiting.values() if k == (tenant, service))
                assert flow["in_flight"] == sum(1 for k in granted.values() if k == (tenant, service))
        for tenant in "abc":
            assert sum(1 for t, _ in granted.values() if t == tenant) <= 2


# ---------------------------------------------------------------- ordering


def test_equal_tenants_alternate() -> None:
    s = scheduler()
    for _ in range(3):
        s.submit("llm", "a", 1.0, now=0)
    for _ in range(3):
        s.submit("llm", "b", 1.0, now=0)
    order = []
    for _ in range(6):
        (grant,) = s.dispatch(0)
        order.append(grant.tenant)
        s.release(grant.ticket)
    assert "".join(order) == "ababab"


def drain(s: FairScheduler, count: int) -> str:
    """Grant and release one at a time, `count` times."""
    order = []
    for _ in range(count):
        (grant,) = s.dispatch(0)
        order.append(grant.tenant)
        s.release(grant.ticket)
    return "".join(order)


def test_weights_share_in_proportion() -> None:
    s = scheduler()
    s.set_tenant("a", UNLIMITED.merged({"weight": 1.0}))
    s.set_tenant("b", UNLIMITED.merged({"weight": 3.0}))
    for _ in range(40):
        s.submit("llm", "a", 1.0, now=0)
        s.submit("llm", "b", 1.0, now=0)
    order = drain(s, 40)
    assert order.count("b") == 30
    for end in range(len(order)):  # interleaved all along, not in bursts
        prefix = order[: end + 1]
        assert abs(prefix.count("a") / 1.0 - prefix.count("b") / 3.0) <= 1 / 1.0 + 1 / 3.0


def test_costs_share_service_not_requests() -> None:
    s = scheduler()
    for _ in range(5):
        s.submit("llm", "big", 10.0, now=0)
    for _ in range(50):
        s.submit("llm", "small", 1.0, now=0)
    order = drain(s, 22)
    assert order.count("big") == 2
    assert order.count("small") == 20


def test_an_idle_tenant_returns_with_no_saved_credit() -> None:
    s = scheduler()
    for _ in range(100):
        s.submit("llm", "a", 1.0, now=0)
    assert drain(s, 50) == "a" * 50
    for _ in range(10):
        s.submit("llm", "b", 1.0, now=1)
    llm = s.stats()["services"]["llm"]
    assert llm["tenants"]["b"]["vt"] == llm["global_vt"] == 49.0
    # It alternates with the busy tenant at once instead of taking 50 requests in a row.
    assert drain(s, 6) == "bababa"


def drain_one(s: FairScheduler) -> str:
    (grant,) = s.dispatch(0)
    s.release(grant.ticket)
    return grant.tenant


def test_global_vt_follows_the_start_tag_in_service() -> None:
    s = scheduler(dispatch_limit=10)
    s.submit("llm", "a", 4.0, now=0)
    s.submit("llm", "a", 4.0, now=0)
    grants = s.dispatch(0)
    assert [g.start_tag for g in grants] == [0.0, 4.0]
    assert s.stats()["services"]["llm"]["global_vt"] == 4.0
    assert s.stats()["services"]["llm"]["tenants"]["a"]["vt"] == 8.0


def test_priorities_order_within_a_tenant_first_come_first_served() -> None:
    s = scheduler()
    tickets = {
        "low1": s.submit("llm", "a", 1.0, now=0, priority=Priority.LOW),
        "default1": s.submit("llm", "a", 1.0, now=0),
        "critical": s.submit("llm", "a", 1.0, now=0, priority="critical"),
        "default2": s.submit("llm", "a", 1.0, now=0, priority=Priority.DEFAULT),
        "low2": s.submit("llm", "a", 1.0, now=0, priority="low"),
    }
    order = []
    for _ in tickets:
        (grant,) = s.dispatch(0)
        order.append(grant.ticket)
        s.release(grant.ticket)
    names = {ticket: name for name, ticket in tickets.items()}
    assert [names[t] for t in order] == ["critical", "default1", "default2", "low1", "low2"]


def test_a_critical_request_does_not_overtake_another_tenant() -> None:
    s = scheduler()
    s.submit("llm", "a", 1.0, now=0, priority=Priority.LOW)
    s.submit("llm", "a", 1.0, now=0, priority=Priority.LOW)
    s.submit("llm", "b", 1.0, now=0, priority=Priority.CRITICAL)
    s.submit("llm", "b", 1.0, now=0, priority=Priority.CRITICAL)
    assert drain(s, 4) == "abab"


def test_low_requests_leave_the_last_slot_free() -> None:
    """A batch holds at most all slots but one; the last goes to a more urgent request at once."""
    s = scheduler(dispatch_limit=3)
    batch = [s.submit("llm", "b", 1.0, now=0, priority=Priority.LOW) for _ in range(5)]
    assert [g.ticket for g in s.dispatch(0)] == batch[:2]
    assert s.dispatch(0) == []  # only low requests wait: the third slot stays free
    chat = s.submit("llm", "a", 1.0, now=0)
    (grant,) = s.dispatch(0)
    assert (grant.ticket, grant.tenant, grant.priority) == (chat, "a", Priority.DEFAULT)
    s.release(batch[0])
    assert s.dispatch(0) == []  # one slot free, and it is the last: kept
    s.release(chat)
    assert [g.ticket for g in s.dispatch(0)] == [batch[2]]


def test_the_last_slot_goes_to_the_next_flow_with_an_urgent_request() -> None:
    """The flow whose turn it is has only low requests: the last slot goes to the urgent request of
    a flow behind it (a larger virtual time); the low flow keeps its place for the next slot."""
    s = scheduler(dispatch_limit=2)
    earlier = s.submit("llm", "c", 5.0, now=0)  # "c" was served before: its virtual time is 5
    s.dispatch(0)
    s.release(earlier)
    running = s.submit("llm", "b", 1.0, now=0, priority=Priority.LOW)
    assert [g.ticket for g in s.dispatch(0)] == [running]
    low = s.submit("llm", "b", 1.0, now=0, priority=Priority.LOW)  # "b" at virtual time 1
    chat = s.submit("llm", "c", 1.0, now=0)
    assert [g.ticket for g in s.dispatch(0)] == [chat]
    s.release(running)
    assert s.dispatch(0) == []  # the last slot again, and only a low request waits
    s.release(chat)
    assert [g.ticket for g in s.dispatch(0)] == [low]
    assert s.stats()["services"]["llm"]["tenants"]["c"]["vt"] == 6.0


def test_a_single_slot_runs_low_requests() -> None:
    s = scheduler(dispatch_limit=1)
    ticket = s.submit("llm", "b", 1.0, now=0, priority=Priority.LOW)
    assert [g.ticket for g in s.dispatch(0)] == [ticket]


def test_a_cancelled_or_blocked_urgent_request_does_not_hold_the_last_slot() -> None:
    s = scheduler(dispatch_limit=2)
    low = [s.submit("llm", "b", 1.0, now=0, priority=Priority.LOW) for _ in range(3)]
    urgent = s.submit("llm", "a", 1.0, now=0)
    s.cancel(urgent)
    assert [g.ticket for g in s.dispatch(0)] == low[:1]
    # A tenant at its own concurrency limit cannot take the slot either.
    s.set_tenant("c", TenantSettings(max_concurrency=0, max_queued=10))
    s.submit("llm", "c", 1.0, now=0)
    assert s.dispatch(0) == []
    s.set_tenant("c", TenantSettings(max_concurrency=1, max_queued=10))
    assert [g.tenant for g in s.dispatch(0)] == ["c"]
    assert s.stats()["services"]["llm"]["queued"] == 2


# ---------------------------------------------------------------- limits


def test_service_dispatch_limit_and_changes_to_it() -> None:
    s = scheduler(dispatch_limit=2)
    tickets = [s.submit("llm", "a", 1.0, now=0) for _ in range(5)]
    assert len(s.dispatch(0)) == 2
    assert s.dispatch(0) == []
    assert s.set_dispatch_limit("llm", 3) is True
    assert s.set_dispatch_limit("llm", 3) is False  # already so: nothing changes
    assert len(s.dispatch(0)) == 1
    s.set_dispatch_limit("LLM", 1)  # below the 3 in flight: nobody is evicted
    s.release(tickets[0])
    s.release(tickets[1])
    assert s.dispatch(0) == []
    s.release(tickets[2])
    assert [g.ticket for g in s.dispatch(0)] == [tickets[3]]
    with pytest.raises(InvalidSettings):
        s.set_dispatch_limit("llm", -1)


def test_a_tenant_at_its_concurrency_limit_lets_the_next_one_go() -> None:
    s = scheduler(dispatch_limit=4)
    s.set_tenant("a", UNLIMITED.merged({"max_concurrency": 1}))
    for _ in range(3):
        s.submit("llm", "a", 1.0, now=0)
    for _ in range(5):
        s.submit("llm", "b", 1.0, now=0)
    grants = s.dispatch(0)
    assert tenants_of(grants) == "abbb"  # work-conserving: b fills what a may not use
    assert s.next_wakeup(0) is None  # only a release can help a
    s.release(grants[0].ticket)
    assert tenants_of(s.dispatch(0)) == "a"


def test_tenant_limits_span_services_in_submission_order() -> None:
    s = scheduler(llm=ServiceLimits(5), tts=ServiceLimits(5))
    s.set_tenant("a", UNLIMITED.merged({"max_concurrency": 1}))
    order = ["llm", "llm", "tts", "llm", "tts", "tts"]
    for service in order:
        s.submit(service, "a", 1.0, now=0)
    served = []
    for _ in order:
        (grant,) = s.dispatch(0)
        served.append(grant.service)
        s.release(grant.ticket)
    assert served == order


def test_a_tenant_rate_bucket_and_next_wakeup() -> None:
    s = scheduler(dispatch_limit=10, defaults=UNLIMITED.merged({"rate_per_s": 2.0, "burst": 2.0}))
    for _ in range(4):
        s.submit("llm", "a", 1.0, now=0)
    s.submit("llm", "b", 1.0, now=0)
    assert tenants_of(s.dispatch(0)) == "aba"  # a's other two wait for tokens; b is not held back
    assert s.next_wakeup(0) == pytest.approx(0.5)
    assert s.dispatch(0.4) == []
    assert tenants_of(s.dispatch(0.5)) == "a"
    assert s.next_wakeup(0.5) == pytest.approx(1.0)
    assert tenants_of(s.dispatch(1.0)) == "a"
    assert s.next_wakeup(1.0) is None


def test_a_service_rate_bucket_and_next_wakeup() -> None:
    s = scheduler(llm=ServiceLimits(10, rate_per_s=1.0, burst=1.0))
    for _ in range(3):
        s.submit("llm", "a", 1.0, now=5)
    assert len(s.dispatch(5)) == 1
    assert s.next_wakeup(5) == pytest.approx(6)
    assert s.dispatch(5.9) == []
    assert len(s.dispatch(6)) == 1


def test_next_wakeup_ignores_a_rate_bucket_while_the_service_is_full() -> None:
    s = scheduler(llm=ServiceLimits(1, rate_per_s=1.0, burst=1.0))
    first = s.submit("llm", "a", 1.0, now=0)
    s.submit("llm", "a", 1.0, now=0)
    s.dispatch(0)
    assert s.next_wakeup(0) is None  # the service is full: a release will call dispatch
    s.release(first)
    assert s.next_wakeup(0) == pytest.approx(1.0)


def test_suspended_tenant_waits_until_its_settings_change() -> None:
    s = scheduler(dispatch_limit=2)
    s.set_tenant("a", UNLIMITED.merged({"max_concurrency": 0}))
    s.submit("llm", "a", 1.0, now=0)
    assert s.dispatch(0) == []
    assert s.next_wakeup(0) is None
    s.set_tenant("a", UNLIMITED)
    assert tenants_of(s.dispatch(0)) == "a"


def test_raising_a_rate_takes_effect_without_waiting_for_the_old_wakeup() -> None:
    s = scheduler(dispatch_limit=5, defaults=UNLIMITED.merged({"rate_per_s": 0.1, "burst": 1.0}))
    s.submit("llm", "a", 1.0, now=0)
    s.submit("llm", "a", 1.0, now=0)
    assert len(s.dispatch(0)) == 1
    assert s.next_wakeup(0) == pytest.approx(10.0)
    s.set_tenant("a", UNLIMITED.merged({"rate_per_s": 10.0, "burst": 1.0}))
    assert s.dispatch(0.1) != []


def test_max_queued_refuses_with_a_retry_after() -> None:
    s = scheduler(defaults=UNLIMITED.merged({"max_queued": 2}))
    s.submit("llm", "a", 1.0, now=0)
    s.submit("llm", "a", 1.0, now=0)
    with pytest.raises(QuotaExceeded) as info:
        s.submit("llm", "a", 1.0, now=0)
    assert info.value.code == "quota_exceeded"
    assert info.value.status == 429
    assert 1.0 <= info.value.retry_after_s <= 60.0
    s.submit("llm", "b", 1.0, now=0)  # another tenant's queue is its own
    s.dispatch(0)  # one of a's leaves the queue
    s.submit("llm", "a", 1.0, now=0)


def test_retry_after_follows_an_empty_rate_bucket() -> None:
    s = scheduler(defaults=UNLIMITED.merged({"rate_per_s": 0.1, "burst": 1.0, "max_queued": 1}))
    s.submit("llm", "a", 1.0, now=0)
    s.dispatch(0)
    s.submit("llm", "a", 1.0, now=0)
    with pytest.raises(QuotaExceeded) as info:
        s.submit("llm", "a", 1.0, now=0)
    assert info.value.retry_after_s == pytest.approx(10.0)


def test_max_queued_zero_refuses_everything() -> None:
    s = scheduler(defaults=UNLIMITED.merged({"max_queued": 0}))
    with pytest.raises(QuotaExceeded):
        s.submit("llm", "a", 1.0, now=0)


def test_service_queue_limit_is_an_overload() -> None:
    s = scheduler(llm=ServiceLimits(1, max_queued=2))
    s.submit("llm", "a", 1.0, now=0)
    s.submit("llm", "b", 1.0, now=0)
    with pytest.raises(ServiceOverloaded) as info:
        s.submit("llm", "c", 1.0, now=0)
    assert (info.value.code, info.value.status, info.value.retry_after_s) == ("service_overloaded", 503, 1.0)


def test_an_interactive_call_over_quota_is_refused_instead_of_queued() -> None:
    s = scheduler(dispatch_limit=5, defaults=UNLIMITED.merged({"max_concurrency": 1}))
    s.submit("llm", "a", 1.0, now=0, wait=False)
    assert len(s.dispatch(0)) == 1
    with pytest.raises(QuotaExceeded):
        s.submit("llm", "a", 1.0, now=0, wait=False)
    assert s.stats()["services"]["llm"]["queued"] == 0
    s.submit("llm", "a", 1.0, now=0)  # a task waits instead
    s.submit("llm", "b", 1.0, now=0, wait=False)


def test_bad_submissions() -> None:
    s = scheduler()
    with pytest.raises(UnknownService) as info:
        s.submit("video", "a", 1.0, now=0)
    assert (info.value.code, info.value.status) == ("unknown_service", 400)
    for cost in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            s.submit("llm", "a", cost, now=0)
    with pytest.raises(ValueError):
        s.submit("llm", "a", 1.0, now=0, priority="urgent")
    assert s.submit("LLM", "a", 1.0, now=0) > 0  # service names are case-insensitive


# ---------------------------------------------------------------- release and cancel


def test_release_charges_the_actual_cost() -> None:
    s = scheduler()
    s.set_tenant("a", UNLIMITED.merged({"weight": 2.0}))
    ticket = s.submit("llm", "a", 10.0, now=0)
    s.dispatch(0)
    s.release(ticket, actual_cost=4.0)
    flow = s.stats()["services"]["llm"]["tenants"]["a"]
    assert flow["vt"] == pytest.approx(2.0)  # 4 / 2, not 10 / 2
    assert flow["served_cost"] == pytest.approx(4.0)
    assert flow["in_flight"] == 0


def test_release_without_a_cost_keeps_the_estimate() -> None:
    s = scheduler()
    ticket = s.submit("llm", "a", 10.0, now=0)
    s.dispatch(0)
    s.release(ticket)
    assert s.stats()["services"]["llm"]["tenants"]["a"]["vt"] == 10.0


def test_correction_moves_a_waiting_tenant_in_the_queue() -> None:
    s = scheduler(dispatch_limit=2)
    big = s.submit("llm", "a", 100.0, now=0)
    s.submit("llm", "b", 1.0, now=0)
    s.dispatch(0)
    s.submit("llm", "a", 1.0, now=0)
    s.submit("llm", "b", 1.0, now=0)
    s.set_dispatch_limit("llm", 3)
    assert tenants_of(s.dispatch(0)) == "b"  # a is charged 100 for now
    s.set_dispatch_limit("llm", 4)
    s.release(big, actual_cost=0.5)  # ... but used only 0.5
    assert tenants_of(s.dispatch(0)) == "a"


def test_a_correction_uses_the_weight_of_the_grant() -> None:
    s = scheduler()
    s.set_tenant("a", UNLIMITED.merged({"weight": 2.0}))
    ticket = s.submit("llm", "a", 10.0, now=0)
    s.dispatch(0)
    s.set_tenant("a", UNLIMITED.merged({"weight": 5.0}))
    s.release(ticket, actual_cost=20.0)
    assert s.stats()["services"]["llm"]["tenants"]["a"]["vt"] == pytest.approx(10.0)


def test_release_errors() -> None:
    s = scheduler()
    waiting = s.submit("llm", "a", 1.0, now=0)
    s.submit("llm", "a", 1.0, now=0)
    with pytest.raises(UnknownTicket) as info:
        s.release(waiting + 1)  # waiting, not granted
    assert info.value.code == "unknown_ticket"
    s.dispatch(0)
    with pytest.raises(ValueError):
        s.release(waiting, actual_cost=-1.0)
    s.release(waiting)
    with pytest.raises(UnknownTicket):
        s.release(waiting)
    with pytest.raises(UnknownTicket):
        s.release(12345)


def test_cancel_a_waiting_request() -> None:
    s = scheduler()
    first = s.submit("llm", "a", 1.0, now=0)
    second = s.submit("llm", "a", 1.0, now=0)
    third = s.submit("llm", "a", 1.0, now=0)
    assert s.cancel(second)
    assert not s.cancel(second)
    assert s.stats()["services"]["llm"]["queued"] == 2
    assert [g.ticket for g in s.dispatch(0)] == [first]
    s.release(first)
    assert [g.ticket for g in s.dispatch(0)] == [third]


def test_cancel_a_granted_request_frees_its_slot_and_refunds_it() -> None:
    s = scheduler()
    first = s.submit("llm", "a", 5.0, now=0)
    second = s.submit("llm", "a", 5.0, now=0)
    s.dispatch(0)
    assert s.cancel(first)
    flow = s.stats()["services"]["llm"]["tenants"]["a"]
    assert (flow["vt"], flow["served_cost"], flow["in_flight"]) == (0.0, 0.0, 0)
    assert [g.ticket for g in s.dispatch(0)] == [second]
    assert not s.cancel(first)
    assert not s.cancel(999)


def test_cancelling_everything_of_a_parked_tenant_then_coming_back() -> None:
    s = scheduler(dispatch_limit=5, defaults=UNLIMITED.merged({"max_concurrency": 1}))
    running = s.submit("llm", "a", 1.0, now=0)
    s.dispatch(0)
    parked = [s.submit("llm", "a", 1.0, now=0) for _ in range(3)]
    assert s.dispatch(0) == []
    for ticket in parked:
        s.cancel(ticket)
    s.release(running)
    assert s.dispatch(0) == []
    again = s.submit("llm", "a", 1.0, now=0)
    assert [g.ticket for g in s.dispatch(0)] == [again]


def test_many_cancellations_leave_the_queue_working() -> None:
    s = scheduler()
    tickets = [s.submit("llm", "a", 1.0, now=0) for _ in range(1000)]
    for ticket in tickets[:-1]:
        s.cancel(ticket)
    assert [g.ticket for g in s.dispatch(0)] == [tickets[-1]]


@given(
    st.lists(st.tuples(st.sampled_from(list(Priority)), st.booleans()), min_size=1, max_size=300),
    st.integers(1, 7),
    st.integers(1, 40),
)
# Queues long enough that a lane compacts while requests still arrive, and while it drains.
@example([(Priority.DEFAULT, i % 5 == 0) for i in range(200)] + [(Priority.CRITICAL, False)] * 60, 3, 7)
@example([(Priority.LOW, False)] * 150, 1, 20)
@settings(max_examples=60, deadline=None)
def test_property_long_queues_go_by_priority_then_fifo_whatever_is_cancelled(
    requests: list[tuple[Priority, bool]], batch: int, every: int
) -> None:
    """One tenant's long queue, some of it cancelled, granted `batch` at a time after every `every`
    arrivals and then to the end: each dispatch grants the most urgent of the requests waiting,
    first come first served, and never a cancelled one."""
    s = scheduler(dispatch_limit=batch)
    waiting: set[tuple[int, int]] = set()  # (priority rank, ticket)
    in_flight: list[int] = []
    granted = 0

    def turn() -> list[int]:
        for ticket in in_flight:
            s.release(ticket)
        tickets = [g.ticket for g in s.dispatch(0)]
        assert [t for _, t in sorted(waiting)[: len(tickets)]] == tickets
        waiting.difference_update((rank, t) for rank, t in list(waiting) if t in tickets)
        return tickets

    for index, (priority, cancelled) in enumerate(requests, start=1):
        ticket = s.submit("llm", "a", 1.0, now=0, priority=priority)
        if cancelled:
            assert s.cancel(ticket)
        else:
            waiting.add((priority.rank, ticket))
        if index % every == 0:
            in_flight = turn()
            granted += len(in_flight)
    while in_flight := turn():
        granted += len(in_flight)
    assert not waiting
    assert granted == sum(not cancelled for _, cancelled in requests)
    assert s.stats()["services"]["llm"]["queued"] == 0


# ---------------------------------------------------------------- settings, state, stats


def test_tenant_records() -> None:
    s = FairScheduler({"llm": ServiceLimits(1)})
    assert s.tenant("new").to_dict() == {"tenant": "new", "configured": False, **TenantSettings().to_dict()}
    record = s.set_tenant("acme", TenantSettings(weight=2.0))
    assert record.configured and record.settings.weight == 2.0
    s.submit("llm", "seen", 1.0, now=0)
    assert [(r.tenant, r.configured) for r in s.tenants()] == [("acme", True), ("seen", False)]


def test_tenant_defaults_apply_to_unconfigured_tenants() -> None:
    s = scheduler(dispatch_limit=10, defaults=UNLIMITED.merged({"max_concurrency": 2}))
    for _ in range(3):
        s.submit("llm", "a", 1.0, now=0)
    assert len(s.dispatch(0)) == 2


def test_snapshot_restore_round_trip() -> None:
    s = scheduler(llm=ServiceLimits(1), tts=ServiceLimits(1))
    s.set_tenant("a", UNLIMITED.merged({"weight": 2.0}))
    for _ in range(3):
        s.submit("llm", "a", 4.0, now=0)
        s.submit("llm", "b", 1.0, now=0)
    drain(s, 4)
    state = json.loads(json.dumps(s.snapshot()))

    restored = scheduler(llm=ServiceLimits(1))
    restored.restore(state)
    assert restored.snapshot()["tenants"] == state["tenants"]
    assert restored.snapshot()["services"]["llm"] == state["services"]["llm"]
    assert "tts" not in restored.snapshot()["services"]
    assert restored.tenant("a").configured
    # The restored virtual times decide who goes next: b is behind, so b first.
    restored.submit("llm", "a", 4.0, now=0)
    restored.submit("llm", "b", 1.0, now=0)
    assert drain_one(restored) == "b"


def test_tickets_start_where_the_host_says() -> None:
    # A restarted actor starts past its predecessor's tickets, so a stale release cannot hit a new grant.
    s = FairScheduler({"llm": ServiceLimits(1)}, first_ticket=1_000_000)
    assert s.submit("llm", "a", 1.0, now=0) == 1_000_000
    assert s.submit("llm", "a", 1.0, now=0) == 1_000_001
    with pytest.raises(UnknownTicket):
        s.release(1)


def test_restore_refuses_a_busy_scheduler_or_an_unknown_version() -> None:
    s = scheduler()
    s.submit("llm", "a", 1.0, now=0)
    with pytest.raises(RuntimeError):
        s.restore(scheduler().snapshot())
    with pytest.raises(InvalidSettings):
        scheduler().restore({"version": 99})


def test_stats_has_the_admin_api_shape() -> None:
    s = scheduler(llm=ServiceLimits(2), tts=ServiceLimits(3))
    s.submit("llm", "acme", 3.0, now=0)
    s.submit("llm", "acme", 3.0, now=0)
    s.set_dispatch_limit("llm", 1)
    s.dispatch(0)
    assert s.stats() == {
        "services": {
            "llm": {
                "queued": 1,
                "in_flight": 1,
                "dispatch_limit": 1,
                "global_vt": 0.0,
                "tenants": {"acme": {"vt": 3.0, "served_cost": 3.0, "queued": 1, "in_flight": 1}},
            },
            "tts": {"queued": 0, "in_flight": 0, "dispatch_limit": 3, "global_vt": 0.0, "tenants": {}},
        }
    }
    json.dumps(s.stats())


# ---------------------------------------------------------------- refusing a wait that would be too long


def paced(hold_s: float, dispatch_limit: int = 1) -> FairScheduler:
    """A scheduler whose `llm` grants have been held `hold_s` each (one call, granted at 0)."""
    s = scheduler(dispatch_limit)
    s.submit("llm", "warm-up", 1.0, now=0)
    (grant,) = s.dispatch(0)
    s.release(grant.ticket, now=hold_s)
    return s


def test_a_request_whose_turn_would_come_too_late_is_refused_at_once() -> None:
    s = paced(hold_s=2.0)
    for _ in range(20):  # one runs, 19 wait: about 40 s of work
        s.submit("llm", "heavy", 1.0, now=10)
    s.dispatch(10)
    assert s.expected_wait_s("llm", "heavy") == pytest.approx(40.0)
    with pytest.raises(ServiceOverloaded) as refused:
        s.submit("llm", "heavy", 1.0, now=10, max_wait_s=30)
    assert refused.value.retry_after_s == pytest.approx(10.0)  # when the queue is 30 s long again
    s.submit("llm", "heavy", 1.0, now=10)  # without a bound it queues, as workflow nodes do
    assert s.stats()["services"]["llm"]["queued"] == 20


def test_another_tenant_s_backlog_does_not_make_a_light_tenant_wait_long() -> None:
    """Fair queuing serves the light tenant's request within a turn or two: it is let in."""
    s = paced(hold_s=2.0)
    for _ in range(20):
        s.submit("llm", "heavy", 1.0, now=10)
    s.dispatch(10)
    assert s.expected_wait_s("llm", "light") == pytest.approx(4.0)  # the running call, one of heavy's
    ticket = s.submit("llm", "light", 1.0, now=10, max_wait_s=30)
    s.release(next(iter(t for t, r in s._requests.items() if r.granted)), now=12)
    (grant,) = s.dispatch(12)
    assert grant.ticket == ticket


def test_the_pace_follows_the_recent_holds_and_ignores_unreported_ends() -> None:
    s = paced(hold_s=2.0, dispatch_limit=2)
    assert s.expected_wait_s("llm", "a") == 0.0  # a free slot and nobody waiting
    tickets = [s.submit("llm", "a", 1.0, now=0) for _ in range(4)]
    s.dispatch(0)
    # Both slots busy, a slot frees every 2.0 / 2 s; a's next waits for its 2 queued ones, b's for one of them.
    assert s.expected_wait_s("llm", "a") == pytest.approx((1 + 2) * 2.0 / 2)
    assert s.expected_wait_s("llm", "b") == pytest.approx((1 + 1) * 2.0 / 2)
    s.release(tickets[0], now=100)  # held 100 s: it moves the average, not all the way
    assert 2.0 < s._services["llm"].hold_s < 100.0  # type: ignore[operator]
    before = s._services["llm"].hold_s
    s.release(tickets[1])  # a lease that ran out: no time reported
    assert s._services["llm"].hold_s == before


def test_before_any_release_nothing_is_refused_for_its_wait() -> None:
    s = scheduler()
    for _ in range(50):
        s.submit("llm", "a", 1.0, now=0)
    assert s.expected_wait_s("llm", "a") is None
    s.submit("llm", "a", 1.0, now=0, max_wait_s=0.001)
