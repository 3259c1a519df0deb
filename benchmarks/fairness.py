"""Fair sharing, measured: the scheduler's policy against three baselines on the same arrival traces.

Everything here runs on a simulated clock, in one process, in a second or two: each policy decides
when requests start, the simulation runs them for their (known) run time on a service with a fixed
number of slots, and the metrics compare who got what.

Policies:
- `ours`: `scheduler.policy.FairScheduler` (start-time fair queuing on cost / weight). Tenant limits
  are set so as never to bind, so that it is the queue discipline that is measured.
- `fcfs`: one first-come-first-served queue.
- `rate_limit`: a token bucket per tenant in front of a FCFS queue, each tenant's rate its weighted
  share of the service's request rate (slots / mean run time), with one second of burst. This is
  fair in requests, not in cost, and not work-conserving.
- `labubu_v1`: the old platform's rule: at arrival, `VFT = max(global_vt, tenant_vt) + 1/weight`
  (cost-blind), served in VFT order, `global_vt` set to the last dispatched VFT.

Traces (4 slots; a request of cost c runs c × 20 ms × U(0.5, 1.5)):
- `weights`: tenants a (weight 1, requests of cost ~10) and b (weight 3, cost ~1), each offering
  1.5× the service's capacity, so both are backlogged throughout.
- `flood`: a light tenant (1 request/s) beside a flooding one (50 requests/s, 2.5× capacity), same
  cost per request; the light tenant's latency is compared with the same requests served alone.
- `idle_return`: a (weight 1) backlogged throughout; b (weight 2) is busy, idle for 20 s, then back.

Metrics:
- weighted gap: `max |S_i/w_i - S_j/w_j|` over every interval in which both tenants have requests
  waiting (S counted from the interval's start, each request's cost when granted), divided by
  `max_cost / min_weight`. Start-time fair queuing bounds it by 2.
- Jain's index over each tenant's service (cost granted while arrivals last) divided by its
  weighted fair share: what fluid weighted fair sharing (GPS) of the same arrivals would have
  served it. While every tenant is backlogged this is service / weight; a tenant that asks for
  less than its share is fair when served all it asked for.
- light p50 / p99: arrival to completion of the light tenant's requests under the flood, and alone;
  the ratio of the p99s.
- utilisation: busy slot-time while arrivals last, over slots × duration.

    .venv/bin/python benchmarks/fairness.py [--seed 1] [--actor]
    .venv/bin/python benchmarks/fairness.py --scale [--tenants 10000] [--queued 1000000] [--actor]

The last line is one JSON object: `{"policies": {"ours": P, "fcfs": P, "rate_limit": P,
"labubu_v1": P}, "actor": {...} | null}`, each P the worst over the traces of
`{"max_weighted_gap_in_max_costs", "jain", "light_p99_ratio", "utilisation"}`. The "actor" half is
`measure_actor()` from `benchmarks/fairness_actor.py`, run with `--actor`. The exit status is 1 when
`ours` misses a target (gap <= 2, Jain >= 0.99, light p99 ratio <= 2).

`--scale` measures the policy alone at internet scale instead: 10,000 tenants over five services,
1,000,000 requests kept queued (every flow stays backlogged: each grant is followed by one more
submission from its flow), and per phase, in CPU seconds of this process (the machine is shared):
submissions, releases, and decisions (grants chosen and dispatched, the time in `dispatch`). It also
measures the bytes allocated at 100k, 300k and 1M queued (tracemalloc, on a separate fill) and the
weighted gap as above (`scale_gap`). With `--actor`, one actor's grants/s from 8 caller processes
(`measure_capacity()` in benchmarks/fairness_actor.py). The last line is `{"decisions_per_s": D,
"tenants": 10000, "queued": 1000000, "max_weighted_gap_in_max_costs": G, ...}`; the exit status is 1
when D < 100,000 or G > 2.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import math
import random
import resource
import sys
import time
import tracemalloc
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from scheduler.buckets import TokenBucket
from scheduler.policy import FairScheduler, Grant
from scheduler.settings import ServiceLimits, TenantSettings

SLOTS = 4
UNIT_S = 0.02  # seconds of service per unit of cost, on average
CAPACITY = SLOTS / UNIT_S  # cost units the service finishes per second, on average
SERVICE = "svc"

TARGETS = {"max_weighted_gap_in_max_costs": 2.0, "jain": 0.99, "light_p99_ratio": 2.0}

# ---------------------------------------------------------------- traces


@dataclass(frozen=True)
class Request:
    id: int
    time: float
    tenant: str
    cost: float
    run_s: float


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    weights: dict[str, float]
    requests: tuple[Request, ...]
    duration_s: float  # arrivals happen in [0, duration_s)
    light: str | None = None  # the tenant whose latency is compared with it running alone

    def alone(self, tenant: str) -> Trace:
        """The same trace with only `tenant`'s requests."""
        return replace(self, requests=tuple(r for r in self.requests if r.tenant == tenant))


def poisson(
    rng: random.Random, tenant: str, per_s: float, start: float, end: float, cost: tuple[float, float]
) -> list[tuple[float, str, float, float]]:
    """Arrivals at `per_s` on average in [start, end), costs uniform in `cost`: (time, tenant, cost,
    run time)."""
    arrivals = []
    now = start + rng.expovariate(per_s)
    while now < end:
        c = rng.uniform(*cost)
        arrivals.append((now, tenant, c, c * UNIT_S * rng.uniform(0.5, 1.5)))
        now += rng.expovariate(per_s)
    return arrivals


def trace(
    name: str,
    description: str,
    weights: dict[str, float],
    arrivals: Iterable[tuple[float, str, float, float]],
    duration_s: float,
    light: str | None = None,
) -> Trace:
    ordered = sorted(arrivals)
    requests = tuple(Request(i, t, tenant, c, run) for i, (t, tenant, c, run) in enumerate(ordered))
    return Trace(name, description, weights, requests, duration_s, light)


def make_traces(seed: int) -> list[Trace]:
    rng = random.Random(seed)
    weights = trace(
        "weights",
        "weights 1 and 3, both backlogged; the weight-1 tenant's requests 10x larger",
        {"a": 1.0, "b": 3.0},
        poisson(rng, "a", 1.5 * CAPACITY / 10, 0, 60, (8.0, 12.0))
        + poisson(rng, "b", 1.5 * CAPACITY / 1, 0, 60, (0.8, 1.2)),
        60.0,
    )
    flood = trace(
        "flood",
        "a light tenant at 1 request/s beside a flood of 50 requests/s, same cost",
        {"light": 1.0, "flood": 1.0},
        poisson(rng, "light", 1.0, 0, 300, (10.0, 10.0)) + poisson(rng, "flood", 50.0, 0, 300, (10.0, 10.0)),
        300.0,
        light="light",
    )
    idle = trace(
        "idle_return",
        "a backlogged throughout; b (weight 2) busy, idle from 20 s to 40 s, then back",
        {"a": 1.0, "b": 2.0},
        poisson(rng, "a", 1.5 * CAPACITY / 5, 0, 60, (3.0, 7.0))
        + poisson(rng, "b", 0.9 * CAPACITY / 5, 0, 20, (3.0, 7.0))
        + poisson(rng, "b", 0.9 * CAPACITY / 5, 40, 60, (3.0, 7.0)),
        60.0,
    )
    return [weights, flood, idle]


# ---------------------------------------------------------------- policies


class Policy(Protocol):
    """What the simulation drives: the scheduler's loop, with request ids for tickets."""

    def submit(self, request: Request, now: float) -> None: ...

    def dispatch(self, now: float) -> list[Request]: ...

    def release(self, request: Request) -> None: ...

    def next_wakeup(self, now: float) -> float | None: ...


class Ours:
    def __init__(self, trace: Trace) -> None:
        self.scheduler = FairScheduler({SERVICE: ServiceLimits(SLOTS)})
        for tenant, weight in trace.weights.items():
            self.scheduler.set_tenant(
                tenant,
                TenantSettings(weight=weight, max_concurrency=SLOTS, rate_per_s=1e9, burst=1e9, max_queued=10**9),
            )
        self.waiting: dict[int, Request] = {}
        self.tickets: dict[int, int] = {}

    def submit(self, request: Request, now: float) -> None:
        self.waiting[self.scheduler.submit(SERVICE, request.tenant, request.cost, now=now)] = request

    def dispatch(self, now: float) -> list[Request]:
        granted = []
        for grant in self.scheduler.dispatch(now):
            request = self.waiting.pop(grant.ticket)
            self.tickets[request.id] = grant.ticket
            granted.append(request)
        return granted

    def release(self, request: Request) -> None:
        self.scheduler.release(self.tickets.pop(request.id))

    def next_wakeup(self, now: float) -> float | None:
        return self.scheduler.next_wakeup(now)


class Fcfs:
    def __init__(self, trace: Trace) -> None:
        self.queue: deque[Request] = deque()
        self.in_flight = 0

    def submit(self, request: Request, now: float) -> None:
        self.queue.append(request)

    def dispatch(self, now: float) -> list[Request]:
        granted = []
        while self.queue and self.in_flight < SLOTS:
            granted.append(self.queue.popleft())
            self.in_flight += 1
        return granted

    def release(self, request: Request) -> None:
        self.in_flight -= 1

    def next_wakeup(self, now: float) -> float | None:
        return None


class RateLimit(Fcfs):
    """Per-tenant token buckets (each tenant's weighted share of the service's request rate) that
    let requests into one FCFS queue."""

    def __init__(self, trace: Trace) -> None:
        super().__init__(trace)
        requests_per_s = SLOTS / (sum(r.run_s for r in trace.requests) / len(trace.requests))
        total = sum(trace.weights.values())
        self.buckets = {}
        for tenant, weight in trace.weights.items():
            rate = requests_per_s * weight / total
            self.buckets[tenant] = TokenBucket(rate, burst=rate)
        self.held: dict[str, deque[Request]] = defaultdict(deque)

    def submit(self, request: Request, now: float) -> None:
        self.held[request.tenant].append(request)

    def dispatch(self, now: float) -> list[Request]:
        while True:
            ready = [q for tenant, q in self.held.items() if q and self.buckets[tenant].ready(now)]
            if not ready:
                break
            queue = min(ready, key=lambda q: q[0].time)
            self.buckets[queue[0].tenant].take(now)
            self.queue.append(queue.popleft())
        return super().dispatch(now)

    def next_wakeup(self, now: float) -> float | None:
        waits = [self.buckets[tenant].wait_s(now) for tenant, q in self.held.items() if q]
        return now + min(waits) if waits else None


class LabubuV1(Fcfs):
    """The old platform: virtual finish times assigned at arrival, one request = 1/weight."""

    def __init__(self, trace: Trace) -> None:
        super().__init__(trace)
        self.weights = trace.weights
        self.global_vt = 0.0
        self.tenant_vt: dict[str, float] = defaultdict(float)
        self.heap: list[tuple[float, int, Request]] = []

    def submit(self, request: Request, now: float) -> None:
        vft = max(self.global_vt, self.tenant_vt[request.tenant]) + 1 / self.weights[request.tenant]
        self.tenant_vt[request.tenant] = vft
        heapq.heappush(self.heap, (vft, request.id, request))

    def dispatch(self, now: float) -> list[Request]:
        granted = []
        while self.heap and self.in_flight < SLOTS:
            self.global_vt, _, request = heapq.heappop(self.heap)
            granted.append(request)
            self.in_flight += 1
        return granted


POLICIES: dict[str, Callable[[Trace], Policy]] = {
    "ours": Ours,
    "fcfs": Fcfs,
    "rate_limit": RateLimit,
    "labubu_v1": LabubuV1,
}

# ---------------------------------------------------------------- simulation


@dataclass
class Outcome:
    log: list[tuple[str, Request]]  # ("submit" | "grant", request), in the order they happened
    granted_at: dict[int, float]
    finished_at: dict[int, float]


def simulate(trace: Trace, policy: Policy) -> Outcome:
    """Run the trace to completion: dispatch after every arrival and completion, and when asked."""
    log: list[tuple[str, Request]] = []
    granted_at: dict[int, float] = {}
    finished_at: dict[int, float] = {}
    running: list[tuple[float, int, Request]] = []
    arrivals = deque(trace.requests)
    wake: float | None = None
    while arrivals or running or wake is not None:
        now = min(
            t
            for t in (arrivals[0].time if arrivals else None, running[0][0] if running else None, wake)
            if t is not None
        )
        while running and running[0][0] <= now:
            _, _, request = heapq.heappop(running)
            finished_at[request.id] = now
            policy.release(request)
        while arrivals and arrivals[0].time <= now:
            request = arrivals.popleft()
            policy.submit(request, now)
            log.append(("submit", request))
        for request in policy.dispatch(now):
            granted_at[request.id] = now
            log.append(("grant", request))
            heapq.heappush(running, (now + request.run_s, request.id, request))
        wake = policy.next_wakeup(now)
        if wake is not None and wake <= now:
            raise RuntimeError(f"{type(policy).__name__} asked to be woken at {wake}, not after {now}")
    return Outcome(log, granted_at, finished_at)


# ---------------------------------------------------------------- metrics


def weighted_gap(trace: Trace, outcome: Outcome) -> float:
    """The largest weighted service gap between two tenants both waiting, in max costs / min weight."""
    unit = max(r.cost for r in trace.requests) / min(trace.weights.values())
    waiting: dict[str, int] = defaultdict(int)
    served: dict[tuple[str, str], dict[str, float]] = {}  # per pair both waiting: cost since then
    worst = 0.0
    for kind, request in outcome.log:
        tenant = request.tenant
        if kind == "submit":
            waiting[tenant] += 1
            if waiting[tenant] == 1:
                for other, count in waiting.items():
                    if other != tenant and count:
                        a, b = sorted((tenant, other))
                        served[(a, b)] = {a: 0.0, b: 0.0}
            continue
        for (a, b), service in served.items():
            if tenant in (a, b):
                service[tenant] += request.cost
                gap = abs(service[a] / trace.weights[a] - service[b] / trace.weights[b])
                worst = max(worst, gap / unit)
        waiting[tenant] -= 1
        if not waiting[tenant]:
            served = {pair: s for pair, s in served.items() if tenant not in pair}
    return worst


def fair_shares(trace: Trace) -> dict[str, float]:
    """Cost each tenant would be served by `duration_s` under fluid weighted fair sharing of the
    service's average capacity (GPS), given the same arrivals."""
    backlog = dict.fromkeys(trace.weights, 0.0)
    served = dict.fromkeys(trace.weights, 0.0)
    arrivals = deque(r for r in trace.requests if r.time < trace.duration_s)
    now = 0.0
    while now < trace.duration_s:
        next_arrival = arrivals[0].time if arrivals else trace.duration_s
        active = [t for t, b in backlog.items() if b > 0]
        if active:
            total = sum(trace.weights[t] for t in active)
            rates = {t: CAPACITY * trace.weights[t] / total for t in active}
            first_drained = min(active, key=lambda t: backlog[t] / rates[t])
            drain_s = backlog[first_drained] / rates[first_drained]
            step = min(next_arrival - now, drain_s)
            for t in active:
                done = min(backlog[t], rates[t] * step)
                backlog[t] -= done
                served[t] += done
            if step == drain_s:  # exactly, whatever the rounding of the subtraction
                backlog[first_drained] = 0.0
            now += step
        else:
            now = next_arrival
        while arrivals and arrivals[0].time <= now:
            request = arrivals.popleft()
            backlog[request.tenant] += request.cost
    return served


def jain(trace: Trace, outcome: Outcome) -> float:
    served: dict[str, float] = defaultdict(float)
    for request in trace.requests:
        if outcome.granted_at.get(request.id, math.inf) < trace.duration_s:
            served[request.tenant] += request.cost
    shares = [served[t] / share for t, share in fair_shares(trace).items() if share > 0]
    return sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares))


def utilisation(trace: Trace, outcome: Outcome) -> float:
    busy = sum(
        max(0.0, min(outcome.finished_at[r.id], trace.duration_s) - outcome.granted_at[r.id])
        for r in trace.requests
        if r.id in outcome.granted_at
    )
    return busy / (SLOTS * trace.duration_s)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latencies(trace: Trace, outcome: Outcome, tenant: str) -> list[float]:
    return [outcome.finished_at[r.id] - r.time for r in trace.requests if r.tenant == tenant]


@dataclass(frozen=True)
class Result:
    gap: float
    jain: float
    utilisation: float
    light: tuple[float, float, float, float] | None  # p50, p99 under the flood; p50, p99 alone


def measure(trace: Trace, make: Callable[[Trace], Policy]) -> Result:
    outcome = simulate(trace, make(trace))
    light = None
    if trace.light is not None:
        alone = trace.alone(trace.light)
        crowded = latencies(trace, outcome, trace.light)
        single = latencies(alone, simulate(alone, make(alone)), trace.light)
        light = (percentile(crowded, 50), percentile(crowded, 99), percentile(single, 50), percentile(single, 99))
    return Result(weighted_gap(trace, outcome), jain(trace, outcome), utilisation(trace, outcome), light)


def worst(results: Sequence[Result]) -> dict[str, float]:
    """One policy's figures for the JSON line: the worst of each metric over the traces."""
    ratios = [r.light[1] / r.light[3] for r in results if r.light is not None]
    return {
        "max_weighted_gap_in_max_costs": round(max(r.gap for r in results), 4),
        "jain": round(min(r.jain for r in results), 4),
        "light_p99_ratio": round(max(ratios), 4),
        "utilisation": round(min(r.utilisation for r in results), 4),
    }


# ---------------------------------------------------------------- at scale

# Five services with their own cost units and slots, as in the platform's config.
SCALE_SERVICES: dict[str, tuple[int, tuple[float, float]]] = {  # slots, request cost range
    "llm": (256, (50.0, 2000.0)),  # prompt + 2 × output tokens
    "tts": (64, (20.0, 600.0)),  # characters
    "stt": (64, (1.0, 60.0)),  # audio seconds
    "pic2text": (32, (1.0, 4.0)),  # images
    "text2pic": (32, (5.0, 50.0)),  # steps × megapixels
}
SCALE_WEIGHTS = (0.5, 1.0, 1.0, 1.0, 2.0, 4.0)
SCALE_PRIORITIES = ("critical",) + ("default",) * 8 + ("low",)
SCALE_MEMORY_POINTS = (100_000, 300_000, 1_000_000)
SCALE_TARGETS = {"decisions_per_s": 100_000.0, "max_weighted_gap_in_max_costs": 2.0}


@dataclass(frozen=True)
class ScaleWorkload:
    """Tenants, their flows and the requests they keep queued, drawn before any clock runs.

    Each tenant uses one to three services; each of its flows keeps `depth` requests waiting (at
    least 4; a few flows hold a thousand), and submits one more each time one is granted, so that every
    flow stays backlogged from its first submission to the end: then every pair of tenants on a
    service is waiting throughout, and the weighted gap is computable without pairs (`scale_gap`).
    """

    weights: dict[str, float]
    flows: list[tuple[str, str, int]]  # (service, tenant, depth)
    costs: dict[str, list[float]]  # per service, a pool of request costs to draw from in turn
    priorities: list[str]  # a pool of priorities to draw from in turn

    @property
    def queued(self) -> int:
        return sum(depth for _, _, depth in self.flows)

    def requests(self, seed: int, limit: int | None = None) -> list[tuple[str, str, float, str]]:
        """The initial queue in a random order, as (service, tenant, cost, priority)."""
        order = [i for i, (_, _, depth) in enumerate(self.flows) for _ in range(depth)]
        random.Random(seed).shuffle(order)
        out = []
        index = dict.fromkeys(self.costs, 0)
        for n, i in enumerate(order[:limit]):
            service, tenant, _ = self.flows[i]
            pool = self.costs[service]
            out.append((service, tenant, pool[index[service] % len(pool)], self.priorities[n % len(self.priorities)]))
            index[service] += 1
        return out


def scale_workload(seed: int, tenants: int, queued: int) -> ScaleWorkload:
    rng = random.Random(seed)
    names = [f"t{i:05d}" for i in range(tenants)]
    weights = {name: rng.choice(SCALE_WEIGHTS) for name in names}
    services = list(SCALE_SERVICES)
    pairs = [(service, name) for name in names for service in rng.sample(services, rng.randint(1, 3))]
    # Pareto-distributed depths: most flows hold a few requests, a few hold hundreds.
    raw = [min(rng.paretovariate(1.2), 100.0) for _ in pairs]
    floor = 4
    scale = (queued - floor * len(pairs)) / sum(raw)
    depths = [floor + int(r * scale) for r in raw]
    for i in range(queued - sum(depths)):  # rounding: top up to exactly `queued`
        depths[i % len(depths)] += 1
    flows = [(service, name, depth) for (service, name), depth in zip(pairs, depths, strict=True)]
    costs = {
        service: [rng.uniform(low, high) for _ in range(65_536)] for service, (_, (low, high)) in SCALE_SERVICES.items()
    }
    priorities = [rng.choice(SCALE_PRIORITIES) for _ in range(4096)]
    return ScaleWorkload(weights, flows, costs, priorities)


def scale_scheduler(workload: ScaleWorkload) -> FairScheduler:
    scheduler = FairScheduler({name: ServiceLimits(slots) for name, (slots, _) in SCALE_SERVICES.items()})
    for tenant, weight in workload.weights.items():
        # Tenant limits that never bind: the queue discipline is what is measured.
        scheduler.set_tenant(
            tenant, TenantSettings(weight=weight, max_concurrency=10_000, rate_per_s=1e9, burst=1e9, max_queued=10**7)
        )
    return scheduler


def scale_memory(workload: ScaleWorkload, points: Sequence[int]) -> list[tuple[int, int]]:
    """Bytes the scheduler allocated (tracemalloc) with each of `points` requests queued."""
    requests = workload.requests(0, max(points))
    tracemalloc.start()
    scheduler = scale_scheduler(workload)
    base = tracemalloc.get_traced_memory()[0]
    out = []
    done = 0
    for point in sorted(points):
        for service, tenant, cost, priority in requests[done:point]:
            scheduler.submit(service, tenant, cost, now=0.0, priority=priority)
        done = point
        out.append((point, tracemalloc.get_traced_memory()[0] - base))
    tracemalloc.stop()
    return out


@dataclass(frozen=True)
class ScaleResult:
    queued: int
    submit_per_s: float  # initial fill
    decisions: int
    batch: int
    decisions_per_s: float  # grants chosen and dispatched, over the time in `dispatch`
    release_per_s: float
    refill_submit_per_s: float
    cycle_per_s: float  # release + submit + dispatch, per grant
    wall_per_s: float  # grants per second of the steady phase on the wall clock, bookkeeping included
    gap: float
    rss_mb: float  # the process's resident memory at the end of the run


def scale_run(workload: ScaleWorkload, decisions: int, batch: int) -> ScaleResult:
    """Fill the queue, then keep it full: release the `batch` oldest grants, dispatch (which grants
    as many), and submit one request for each flow granted. Each phase is timed on its own."""
    requests = workload.requests(0)
    scheduler = scale_scheduler(workload)
    # CPU time of this process, not wall time: the machine is shared, and what is measured is the
    # policy's own cost. The whole steady phase is also timed on the wall clock, bookkeeping included.
    clock = time.process_time
    submit = scheduler.submit
    gc.collect()
    gc.disable()  # a collection of a million-object heap would land in one phase's timing
    try:
        start = clock()
        for service, tenant, cost, priority in requests:
            submit(service, tenant, cost, now=0.0, priority=priority)
        fill_s = clock() - start
        del requests

        log: list[Grant] = []
        in_flight: deque[int] = deque()
        costs = workload.costs
        cursor = dict.fromkeys(costs, 0)
        priorities = workload.priorities
        release, dispatch = scheduler.release, scheduler.dispatch
        release_s = submit_s = dispatch_s = 0.0
        now = 0.0
        grants = dispatch(now)
        wall = time.perf_counter()
        depths = {(service, tenant): depth for service, tenant, depth in workload.flows}
        while True:
            for (service, tenant), count in Counter((g.service, g.tenant) for g in grants).items():
                if count >= depths[service, tenant]:  # it went idle: `scale_gap` would not hold
                    raise RuntimeError(f"flow {service}/{tenant} drained in one dispatch")
            log.extend(grants)
            in_flight.extend(g.ticket for g in grants)
            t0 = clock()
            for g in grants:  # each granted flow queues one more
                service = g.service
                i = cursor[service]
                cursor[service] = i + 1
                pool = costs[service]
                submit(service, g.tenant, pool[i & 65535], now=now, priority=priorities[i & 4095])
            t1 = clock()
            submit_s += t1 - t0
            if len(log) >= decisions:
                break
            now += 0.001
            t0 = clock()
            for _ in range(batch):
                release(in_flight.popleft())
            t1 = clock()
            grants = dispatch(now)
            t2 = clock()
            release_s += t1 - t0
            dispatch_s += t2 - t1
            if len(grants) != batch:
                raise RuntimeError(f"dispatch granted {len(grants)} after {batch} releases")
        wall = time.perf_counter() - wall
    finally:
        gc.enable()
    with open("/proc/self/statm") as statm:  # resident now, with the scheduler and its queue alive
        rss_mb = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    steady = len(log) - sum(slots for slots, _ in SCALE_SERVICES.values())  # after the first dispatch
    return ScaleResult(
        queued=workload.queued,
        submit_per_s=workload.queued / fill_s,
        decisions=len(log),
        batch=batch,
        decisions_per_s=steady / dispatch_s,
        release_per_s=steady / release_s,
        refill_submit_per_s=len(log) / submit_s,
        cycle_per_s=steady / (release_s + dispatch_s + submit_s * steady / len(log)),
        wall_per_s=steady / wall,
        gap=scale_gap(workload, log),
        rss_mb=rss_mb,
    )


def scale_gap(workload: ScaleWorkload, log: Sequence[Grant]) -> float:
    """`weighted_gap` for a run in which every flow stays backlogged throughout.

    Then every pair of tenants on a service is waiting from before the first grant to the end, and
    the largest gap over pairs and times is the largest, over times, of `max_i S_i/w_i - min_j
    S_j/w_j` over that service's flows: O(grants × log flows) instead of O(grants × pairs). In max
    costs / min weight of each service, as `weighted_gap`.
    """
    worst = 0.0
    by_service: dict[str, list[Grant]] = defaultdict(list)
    for grant in log:
        by_service[grant.service].append(grant)
    for service, grants in by_service.items():
        tenants = [tenant for s, tenant, _ in workload.flows if s == service]
        unit = max(workload.costs[service]) / min(workload.weights[t] for t in tenants)
        served = dict.fromkeys(tenants, 0.0)
        lowest = [(0.0, tenant) for tenant in tenants]  # a heap of (S/w, tenant), stale entries kept
        highest = 0.0
        for grant in grants:
            served[grant.tenant] += grant.cost / workload.weights[grant.tenant]
            highest = max(highest, served[grant.tenant])
            heapq.heappush(lowest, (served[grant.tenant], grant.tenant))
            while lowest[0][0] != served[lowest[0][1]]:
                heapq.heappop(lowest)
            worst = max(worst, (highest - lowest[0][0]) / unit)
    return worst


# ---------------------------------------------------------------- report


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(traces: Sequence[Trace], results: dict[str, list[Result]]) -> None:
    for index, tr in enumerate(traces):
        counts = ", ".join(f"{t}: {sum(r.tenant == t for r in tr.requests)}" for t in tr.weights)
        print(f"\n{tr.name}: {tr.description} ({tr.duration_s:g} s; requests {counts})")
        header = ["policy", "weighted gap", "Jain", "utilisation"]
        if tr.light is not None:
            header += ["light p50 / p99 (s)", "alone p50 / p99 (s)", "p99 ratio"]
        rows = [header]
        for name, per_trace in results.items():
            r = per_trace[index]
            row = [name, f"{r.gap:.2f}", f"{r.jain:.4f}", f"{r.utilisation:.3f}"]
            if r.light is not None:
                row += [
                    f"{r.light[0]:.3f} / {r.light[1]:.3f}",
                    f"{r.light[2]:.3f} / {r.light[3]:.3f}",
                    f"{r.light[1] / r.light[3]:.2f}",
                ]
            rows.append(row)
        print(table(rows))
    print("\nworst over the traces (targets for ours: gap <= 2, Jain >= 0.99, light p99 ratio <= 2)")
    rows = [["policy", "weighted gap", "Jain", "light p99 ratio", "utilisation"]]
    for name, per_trace in results.items():
        w = worst(per_trace)
        rows.append(
            [
                name,
                *(f"{w[k]:.4g}" for k in ("max_weighted_gap_in_max_costs", "jain", "light_p99_ratio", "utilisation")),
            ]
        )
    print(table(rows))


def scale_report(memory: Sequence[tuple[int, int]], runs: Sequence[ScaleResult], actor: dict[str, Any] | None) -> None:
    print(f"\nscale: {len(SCALE_SERVICES)} services, tenants and queue as below, every flow kept backlogged")
    if memory:
        rows = [["queued", "allocated (MB)", "bytes / queued request", "marginal bytes / request"]]
        previous: tuple[int, int] | None = None
        for queued, allocated in memory:
            marginal = "" if previous is None else f"{(allocated - previous[1]) / (queued - previous[0]):.0f}"
            rows.append([f"{queued:,}", f"{allocated / 2**20:.1f}", f"{allocated / queued:.0f}", marginal])
            previous = (queued, allocated)
        print(table(rows))
        print()
    rows = [
        [
            "batch",
            "queued",
            "decisions",
            "submit/s (fill)",
            "submit/s (steady)",
            "release/s",
            "decisions/s",
            "cycle/s",
            "wall/s",
            "weighted gap",
            "RSS (MB)",
        ]
    ]
    for r in runs:
        rows.append(
            [
                str(r.batch),
                f"{r.queued:,}",
                f"{r.decisions:,}",
                f"{r.submit_per_s:,.0f}",
                f"{r.refill_submit_per_s:,.0f}",
                f"{r.release_per_s:,.0f}",
                f"{r.decisions_per_s:,.0f}",
                f"{r.cycle_per_s:,.0f}",
                f"{r.wall_per_s:,.0f}",
                f"{r.gap:.3f}",
                f"{r.rss_mb:.0f}",
            ]
        )
    print(table(rows))
    print(
        "decisions/s: grants chosen and dispatched per second of `dispatch` (batch: releases, hence grants,"
        " per dispatch call); cycle/s: per grant, release + dispatch + the refill submit (CPU time);"
        " wall/s: grants per wall-clock second of the steady phase, the benchmark's bookkeeping and the"
        " machine's other load included"
    )
    if actor is not None:
        print(
            f"\nactor, {actor['processes']} caller processes ({actor['processes_on_time']} ready in time), each with"
            f" {actor['in_flight_per_process']} callers batching grants: {actor['grants_per_s']:,.0f} grants/s"
            f" over {actor['seconds']:g} s"
        )


def scale_main(args: argparse.Namespace) -> int:
    workload = scale_workload(args.seed, args.tenants, args.queued)
    points = [p for p in SCALE_MEMORY_POINTS if p < args.queued] + [args.queued]
    memory = scale_memory(workload, points) if args.memory else []
    runs = [scale_run(workload, args.decisions, batch) for batch in args.batch]
    actor: dict[str, Any] | None = None
    if args.actor:
        from fairness_actor import measure_capacity  # the live half, beside this file

        actor = measure_capacity()
    main_run = runs[0]
    figures: dict[str, Any] = {
        "decisions_per_s": round(main_run.decisions_per_s),
        "tenants": args.tenants,
        "queued": workload.queued,
        "max_weighted_gap_in_max_costs": round(max(r.gap for r in runs), 4),
        "batch": main_run.batch,
        "cycle_per_s": round(main_run.cycle_per_s),
        "submit_per_s": round(main_run.refill_submit_per_s),
        "release_per_s": round(main_run.release_per_s),
        "bytes_per_queued_request": {str(q): round(m / q) for q, m in memory},
        "actor_grants_per_s_8_processes": None if actor is None else round(actor["grants_per_s"]),
    }
    scale_report(memory, runs, actor)
    print(json.dumps(figures))
    ok = (
        figures["decisions_per_s"] >= SCALE_TARGETS["decisions_per_s"]
        and figures["max_weighted_gap_in_max_costs"] <= SCALE_TARGETS["max_weighted_gap_in_max_costs"]
    )
    return 0 if ok else 1


def meets_targets(figures: dict[str, float]) -> bool:
    return (
        figures["max_weighted_gap_in_max_costs"] <= TARGETS["max_weighted_gap_in_max_costs"]
        and figures["jain"] >= TARGETS["jain"]
        and figures["light_p99_ratio"] <= TARGETS["light_p99_ratio"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1, help="seed of the arrival traces")
    parser.add_argument(
        "--actor",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also measure the live scheduler actor (benchmarks/fairness_actor.py)",
    )
    scale = parser.add_argument_group("--scale: the policy alone, with many tenants and a long queue")
    scale.add_argument("--scale", action="store_true", help="measure the policy at scale instead of the traces")
    scale.add_argument("--tenants", type=int, default=10_000)
    scale.add_argument("--queued", type=int, default=1_000_000, help="requests kept waiting")
    scale.add_argument("--decisions", type=int, default=300_000, help="grants to time, per batch size")
    scale.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[64, 1],
        help="releases (hence grants) per dispatch call; the first is the JSON line's",
    )
    scale.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure allocations at 100k, 300k and all queued (tracemalloc, a separate fill)",
    )
    args = parser.parse_args(argv)
    if args.scale:
        return scale_main(args)

    traces = make_traces(args.seed)
    results = {name: [measure(tr, make) for tr in traces] for name, make in POLICIES.items()}
    report(traces, results)
    actor: dict[str, Any] | None = None
    if args.actor:
        from fairness_actor import measure_actor  # the live half, beside this file

        actor = measure_actor()
    policies = {name: worst(per_trace) for name, per_trace in results.items()}
    print(json.dumps({"policies": policies, "actor": actor}))
    return 0 if meets_targets(policies["ours"]) else 1


if __name__ == "__main__":
    sys.exit(main())
