"""Load and soak: several tenants send interactive calls and workflows at a rising rate.

Arrivals are a Poisson process whose rate rises linearly from `--rate-start` to `--rate-end`
requests per second over `--duration-s` (ten minutes; `--quick`: one minute). Each arrival is, by
weight, a chat completion of a few tokens, a short sentence spoken, a 64×64 tiny-random picture or
a two-node workflow (llm → tts), from one of `--tenants` tenants with the default quotas. The run
is bounded in time and in count (`--max-requests`, `--max-in-flight`: arrivals beyond either are
not sent, and are counted as `shed`). After the last arrival, submitted workflows get `--drain-s`
to end.

Reported: throughput, p50/p99 latency per route (successful responses), every status count, the
resident memory of the Ray cluster's processes over the run, and the workflows: `lost` = accepted
(202) but failed, cancelled or gone; `stuck` = still not ended after the drain. For context, the
table also shows the scheduler's peak queues and the machine's load average (it may be shared).

    .venv/bin/python benchmarks/load.py [--quick]

Last line: {"duration_s": x, "requests": n, "status_counts": {"200": n, ...}, "p50_ms": {route: x},
"p99_ms": {route: x}, "rss_growth_mb": x, "workflows": {"submitted": n, "completed": n, "lost": n, "stuck": n}}

`--overload`: the same mix at three times the platform's capacity, measured in the same run.
1. Capacity, closed loop (`--capacity-s`, 60 s): `--capacity-clients` clients (16) each send the
   mix's next request as soon as their previous one is answered, and for a workflow, as soon as it
   has ended (polled). Capacity is what they got done per second: answered calls plus ended
   workflows, over the phase. Sixteen saturate every service: each holds at most two grants per
   replica (`serve_app/capacity.py`), and the mix spreads sixteen clients over four routes.
2. Overload, open loop: Poisson arrivals at `--overload-factor` (3) × capacity for `--duration-s`
   (300 s) from `--tenants` (20) tenants, whatever the answers, with no bound on requests in
   flight. Then the in-flight calls are awaited and the accepted workflows get `--drain-s` (300 s)
   to end.

Every arrival must be answered: 200 (202 for a workflow), or 429/503 with `Retry-After`; a client
timeout is `--timeout-s` (120 s, four times the longest an interactive call may wait for its turn).
`lost` is the accepted workflows that did not complete (failed, cancelled, gone or still running
after the drain). `rss_growth_mb` is the Ray cluster's resident memory at the end minus after the
warm-up, so it spans both phases and the drain (eight to ten minutes), by process in the table.
Processes are named by their Ray title without the method a worker is running (Ray retitles a
worker for each task: grouped by raw title, a process counted as new memory whenever its title
differed between the first and the last sample).

`--periods 2` overloads and drains twice and also reports the growth over the second period alone
(`rss_growth_last_period_mb`): memory that the first period's queues left at a high-water mark is
not counted again, memory that grows with the load is.

`--app-args` deploys the platform with other app args (JSON; e.g. the ingress's Serve options
under `deployment_options`); `--trace name@namespace,...` runs tracemalloc in those named actors
(the Serve controller, the executor, the scheduler) and prints the Python allocation sites that
grew, to tell objects kept alive from the allocator's own growth.

    .venv/bin/python benchmarks/load.py --overload [--duration-s 60]

Last line: {"requests": n, "timeouts": 0, "status_counts": {"200": n, ...}, "lost": 0,
"rss_growth_mb": x, ...}, then the capacity, the arrival rate, the workflows and the growth by process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import httpx
import psutil
from _platform import start_platform, token  # beside this file; sets up the path and env
from memory import CONTROLLER_NAME, SERVE_NAMESPACE, print_sites, start_trace, traced_growth

ROUTE_CHAT = "POST /v1/chat/completions"
ROUTE_SPEECH = "POST /v1/audio/speech"
ROUTE_IMAGE = "POST /v1/images/generations"
ROUTE_SUBMIT = "POST /v1/workflows"
ROUTE_LIST = "GET /v1/workflows"

CHAT = {"model": "llm", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}
SPEECH = {"model": "tts", "input": "Hello there."}
IMAGE = {"prompt": "a red lighthouse", "size": "64x64", "response_format": "b64_json"}
WORKFLOW = {
    "name": "load",
    "nodes": {
        "write": {"service": "llm", "prompt": "Name a colour.", "params": {"max_tokens": 4, "temperature": 0}},
        "speak": {"service": "tts", "prompt": ""},
    },
    "edges": [{"from": "write", "to": "speak"}],
}
# (route, path, body, share of the arrivals)
MIX: list[tuple[str, str, dict[str, Any], float]] = [
    (ROUTE_CHAT, "/v1/chat/completions", CHAT, 0.5),
    (ROUTE_SPEECH, "/v1/audio/speech", SPEECH, 0.2),
    (ROUTE_IMAGE, "/v1/images/generations", IMAGE, 0.1),
    (ROUTE_SUBMIT, "/v1/workflows", WORKFLOW, 0.2),
]
WEIGHTS = [share for *_, share in MIX]
ROUTES_OF_MIX = {route for route, *_ in MIX}
ROUTE_GET = "GET /v1/workflows/{id}"
FINAL = {"completed", "failed", "cancelled"}
OBSERVE_EVERY_S = 5.0
POLL_EVERY_S = 3.0
WORKFLOW_POLL_S = 0.5  # a closed-loop client's poll of its workflow
WINDOWS = 10  # rows of the timeline
WINDOW_S = 30.0  # a row of `--overload`'s timeline
CONTROLLER_TITLE = "ray::ServeController"


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least `q` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def process_name(title: str) -> str:
    """A Ray worker's title without the method it is running: Ray retitles a worker for each task
    (`ray::ServeController.listen_for_change`, `ray::ServeReplica:labubu:ingress.handle_request`),
    so the title alone would count one process under several names across samples."""
    return title.split(".", 1)[0] if title.startswith("ray::") else os.path.basename(title)


def cluster_rss_mb() -> Counter[str]:
    """Resident memory (MB) of the local Ray cluster's processes, by process name (`ray::ServeReplica:
    labubu:llm`, `raylet`, ...; processes of one name summed): this driver started them all."""
    found: Counter[str] = Counter()
    for child in psutil.Process().children(recursive=True):
        try:
            found[process_name(child.cmdline()[0])] += child.memory_info().rss / 2**20
        except (psutil.Error, IndexError):  # a worker that just exited
            continue
    return found


def refusal_of(response: httpx.Response | None) -> str:
    """Who refused: the platform's error code (its JSON body), else `serve` (Serve's plain text)."""
    try:
        return str(response.json()["error"]["code"]) if response is not None else ""
    except (ValueError, KeyError, TypeError):
        return "serve"


@dataclass
class Sample:
    route: str
    status: str
    at_s: float
    latency_ms: float
    phase: str = ""
    retry_after: bool = False  # the answer had a Retry-After header
    refusal: str = ""  # a 429/503's error code, or `serve` for Serve's own (its proxy's backpressure)


@dataclass
class Run:
    """What the load generator saw."""

    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    shed: int = 0
    workflows: dict[str, str] = field(default_factory=dict)  # workflow id -> tenant
    statuses: dict[str, str] = field(default_factory=dict)  # workflow id -> last status seen
    rss: list[tuple[float, Counter[str]]] = field(default_factory=list)
    # The machine is shared: its load average says what else competed for the two cores.
    load: list[tuple[float, float]] = field(default_factory=list)
    queued: Counter[str] = field(default_factory=Counter)  # peak requests waiting per service
    phase: str = ""  # what the samples taken from now on belong to (`--overload`: capacity, overload)
    marks: dict[str, float] = field(default_factory=dict)  # moments of the run, by name

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.marks[phase] = self.now()

    def rss_at(self, at_s: float) -> Counter[str]:
        """The cluster's RSS (MB by process) at the last sample taken by `at_s` (else the first)."""
        return [mb for t, mb in self.rss if t <= at_s or t == self.rss[0][0]][-1]

    def now(self) -> float:
        return time.monotonic() - self.started

    async def timed(
        self, route: str, call: Callable[[], Awaitable[httpx.Response]], phase: str | None = None
    ) -> httpx.Response | None:
        start, phase = time.monotonic(), self.phase if phase is None else phase
        response: httpx.Response | None = None
        try:
            response = await call()
            status = str(response.status_code)
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.HTTPError:
            status = "connection_error"
        retry_after = response is not None and "retry-after" in response.headers
        latency_ms = (time.monotonic() - start) * 1000
        refusal = refusal_of(response) if status in ("429", "503") else ""
        self.samples.append(Sample(route, status, start - self.started, latency_ms, phase, retry_after, refusal))
        return response


async def send(
    run: Run,
    http: httpx.AsyncClient,
    tenant: str,
    route: str,
    path: str,
    body: dict[str, Any],
    phase: str | None = None,  # of the arrival: the task may start once the next phase has begun
) -> None:
    response = await run.timed(route, lambda: http.post(path, json=body), phase)
    if route == ROUTE_SUBMIT and response is not None and response.status_code == 202:
        run.workflows[response.json()["workflow_id"]] = tenant


async def poll_workflows(run: Run, clients: dict[str, httpx.AsyncClient]) -> None:
    """One paged list call per tenant: the status of every workflow the run submitted."""
    for http in clients.values():
        offset, total = 0, 1
        while offset < total:
            params = {"limit": 200, "offset": offset}
            response = await run.timed(ROUTE_LIST, partial(http.get, "/v1/workflows", params=params))
            if response is None or response.status_code != 200:
                break
            page = response.json()
            total = page["total"]
            offset += len(page["items"]) or total
            for item in page["items"]:
                run.statuses[item["workflow_id"]] = item["status"]


def unfinished(run: Run) -> list[str]:
    return [wid for wid in run.workflows if run.statuses.get(wid) not in FINAL]


async def every(period_s: float, action: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await action()
        try:
            await asyncio.wait_for(stop.wait(), period_s)
        except asyncio.TimeoutError:
            continue


def tenant_clients(base: str, tenants: list[str], timeout_s: float) -> dict[str, httpx.AsyncClient]:
    return {
        t: httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token(t)}"}, timeout=timeout_s)
        for t in tenants
    }


async def observe(run: Run, admin: httpx.AsyncClient) -> None:
    """One sample of the cluster's memory, the machine's load and the scheduler's queues."""
    run.rss.append((run.now(), await asyncio.to_thread(cluster_rss_mb)))
    run.load.append((run.now(), os.getloadavg()[0]))
    try:
        response = await admin.get("/v1/admin/scheduler")
    except httpx.HTTPError:  # context only: a slow answer under overload is not a result
        return
    if response.status_code == 200:
        for service, state in response.json()["services"].items():
            run.queued[service] = max(run.queued[service], state["queued"])


async def watched(
    run: Run, base: str, clients: dict[str, httpx.AsyncClient], poll_every_s: float, body: Awaitable[None]
) -> None:
    """Run `body` while sampling memory and polling the workflows; a last sample and poll after it."""
    admin = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token('ops', 'admin')}"}, timeout=30)
    stop = asyncio.Event()
    watchers = [
        asyncio.create_task(every(OBSERVE_EVERY_S, lambda: observe(run, admin), stop)),
        asyncio.create_task(every(poll_every_s, lambda: poll_workflows(run, clients), stop)),
    ]
    try:
        await body
    finally:
        stop.set()
        await asyncio.gather(*watchers)
    await poll_workflows(run, clients)
    await observe(run, admin)
    for http in [*clients.values(), admin]:
        await http.aclose()


async def drain(run: Run, in_flight: set[asyncio.Task[None]], drain_s: float) -> None:
    """Await the calls in flight, then give the accepted workflows `drain_s` to end."""
    if in_flight:
        await asyncio.wait(in_flight)
    drain_end = time.monotonic() + drain_s
    while unfinished(run) and time.monotonic() < drain_end:
        await asyncio.sleep(POLL_EVERY_S)


async def generate(base: str, args: argparse.Namespace) -> Run:
    tenants = [f"load-{i}" for i in range(args.tenants)]
    clients = tenant_clients(base, tenants, args.timeout_s)
    rng = random.Random(args.seed)
    run = Run()

    async def arrivals() -> None:
        in_flight: set[asyncio.Task[None]] = set()
        sent = 0
        while (elapsed := run.now()) < args.duration_s:
            rate = args.rate_start + (args.rate_end - args.rate_start) * elapsed / args.duration_s
            await asyncio.sleep(rng.expovariate(rate))
            if run.now() >= args.duration_s:
                break
            route, path, body, _ = rng.choices(MIX, WEIGHTS)[0]
            if sent >= args.max_requests or len(in_flight) >= args.max_in_flight:
                run.shed += 1
                continue
            sent += 1
            tenant = rng.choice(tenants)
            task = asyncio.create_task(send(run, clients[tenant], tenant, route, path, body))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await drain(run, in_flight, args.drain_s)

    await watched(run, base, clients, POLL_EVERY_S, arrivals())
    return run


# ------------------------------------------------------------------ --overload


async def closed_loop_client(
    run: Run, http: httpx.AsyncClient, tenant: str, rng: random.Random, end_s: float, done: list[float]
) -> None:
    """Send the mix's next request once the last is answered (a workflow: once it has ended) until
    `end_s`; `done` gets the time of each answered call and ended workflow."""
    while run.now() < end_s:
        route, path, body, _ = rng.choices(MIX, WEIGHTS)[0]
        response = await run.timed(route, partial(http.post, path, json=body))
        if response is None or not response.is_success:
            await asyncio.sleep(1.0)  # not expected below capacity; the table shows it
            continue
        if route == ROUTE_SUBMIT:
            workflow_id = response.json()["workflow_id"]
            run.workflows[workflow_id] = tenant
            while run.now() < end_s and run.statuses.get(workflow_id) not in FINAL:
                await asyncio.sleep(WORKFLOW_POLL_S)
                answer = await run.timed(ROUTE_GET, partial(http.get, f"/v1/workflows/{workflow_id}"))
                if answer is not None and answer.status_code == 200:
                    run.statuses[workflow_id] = answer.json()["status"]
            if run.statuses.get(workflow_id) not in FINAL:
                continue  # still running at the end of the phase: not counted, but the drain awaits it
        done.append(run.now())


async def overload(base: str, args: argparse.Namespace) -> tuple[Run, float, float]:
    """The capacity phase, then the open-loop overload and the drain; the run, the capacity and
    the arrival rate (requests/s)."""
    tenants = [f"over-{i}" for i in range(args.tenants)]
    clients = tenant_clients(base, tenants, args.timeout_s)
    rng = random.Random(args.seed)
    run = Run()
    rates: list[float] = []

    async def phases() -> None:
        run.enter("capacity")
        end_s = run.now() + args.capacity_s
        done: list[float] = []
        await asyncio.gather(
            *(
                closed_loop_client(run, clients[tenants[i % len(tenants)]], tenants[i % len(tenants)], rng, end_s, done)
                for i in range(args.capacity_clients)
            )
        )
        capacity = len(done) / args.capacity_s
        rate = args.overload_factor * capacity
        rates.extend([capacity, rate])
        print(
            f"capacity: {capacity:.2f} requests/s (closed loop, {args.capacity_clients} clients); "
            f"offering {rate:.2f}/s for {args.duration_s:g} s",
            flush=True,
        )

        # Open loop: arrivals keep to their own schedule whatever the answers (sleeping to each
        # arrival's time rather than for each gap, so that a busy event loop does not slow them).
        for period in range(1, args.periods + 1):
            run.enter(phase_name("overload", period))
            in_flight: set[asyncio.Task[None]] = set()
            start_s = next_s = run.now()
            while True:
                next_s += rng.expovariate(rate)
                if next_s >= start_s + args.duration_s:
                    break
                await asyncio.sleep(max(0.0, next_s - run.now()))
                route, path, body, _ = rng.choices(MIX, WEIGHTS)[0]
                tenant = rng.choice(tenants)
                task = asyncio.create_task(send(run, clients[tenant], tenant, route, path, body, run.phase))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            run.enter(phase_name("drain", period))
            await drain(run, in_flight, args.drain_s)

    await watched(run, base, clients, args.poll_s, phases())
    return run, rates[0], rates[1]


def phase_name(kind: str, period: int) -> str:
    """`overload` or `drain`, numbered from the second period on."""
    return kind if period == 1 else f"{kind} {period}"


def by_process(growth: Counter[str]) -> dict[str, float]:
    """Growth per process title, largest first, leaving out those under a megabyte."""
    return {title: round(mb, 1) for title, mb in growth.most_common() if abs(mb) >= 1}


def answered(sample: Sample) -> bool:
    """The contract under overload: a success, or a refusal that says when to come back."""
    return sample.status in ("200", "202") or (sample.status in ("429", "503") and sample.retry_after)


def summarise_overload(run: Run, capacity: float, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    arrivals = [s for s in run.samples if s.phase.startswith("overload") and s.route in ROUTES_OF_MIX]
    statuses = Counter(s.status for s in arrivals)
    accepted = set(run.workflows)
    ended = Counter(run.statuses.get(wid, "missing") for wid in accepted)
    first, last = run.rss[0][1], run.rss[-1][1]
    growth = Counter(last)
    growth.subtract(first)
    return {
        "requests": len(arrivals),
        "timeouts": statuses["timeout"],
        "status_counts": dict(sorted(statuses.items())),
        "lost": len(accepted) - ended["completed"],
        "rss_growth_mb": round(last.total() - first.total(), 1),
        "unanswered": sum(not answered(s) for s in run.samples),  # every phase, every route
        "refused_without_retry_after": sum(s.status in ("429", "503") and not s.retry_after for s in run.samples),
        "capacity_rps": round(capacity, 2),
        "arrival_rps": round(rate, 2),
        "offered_rps": round(len(arrivals) / (args.duration_s * args.periods), 2),
        "workflows": {"accepted": len(accepted), **dict(sorted(ended.items()))},
        "duration_s": round(run.now(), 1),
        # Memory at moments of the run: a high-water mark reached in the overload's first minute
        # (requests in flight, queues) against growth that goes on at the same load.
        "rss_mb": {
            name: round(run.rss_at(at_s).total())
            for name, at_s in [
                ("start", 0.0),
                ("overload", run.marks["overload"]),
                ("overload+60s", run.marks["overload"] + 60),
                ("drain", run.marks["drain"]),
                ("end", run.now()),
            ]
        },
        "rss_growth_by_process_mb": by_process(growth),
    } | last_period_growth(run, args.periods)


def last_period_growth(run: Run, periods: int) -> dict[str, Any]:
    """With `--periods` > 1: the growth over the last period alone, from its first arrival to the
    end, when the first periods have set the high-water marks of the same load (leak or not)."""
    if periods == 1:
        return {}
    before, last = run.rss_at(run.marks[phase_name("overload", periods)]), run.rss[-1][1]
    growth = Counter(last)
    growth.subtract(before)
    return {
        "rss_growth_last_period_mb": round(last.total() - before.total(), 1),
        "rss_growth_last_period_by_process_mb": by_process(growth),
    }


def print_overload(run: Run, figures: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\noverload: capacity {figures['capacity_rps']} requests/s measured closed-loop over {args.capacity_s:g} s; "
        f"then {figures['arrival_rps']} arrivals/s ({args.overload_factor:g}×) open-loop for {args.duration_s:g} s "
        f"from {args.tenants} tenants, then a drain; {figures['duration_s']:g} s in all"
    )
    print(
        f"{'phase':<10}{'route':<28}{'requests':>9}{'200/202':>8}{'429':>6}{'503':>6}{'other':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    rows: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in run.samples:
        rows[(s.phase, s.route)].append(s)
    for (phase, route), samples in sorted(rows.items()):
        counts = Counter(s.status for s in samples)
        good = counts["200"] + counts["202"]
        latencies = [s.latency_ms for s in samples]
        ok = [s.latency_ms for s in samples if s.status in ("200", "202")] or [math.nan]
        print(
            f"{phase:<10}{route:<28}{len(samples):>9}{good:>8}{counts['429']:>6}{counts['503']:>6}"
            f"{len(samples) - good - counts['429'] - counts['503']:>7}{percentile(ok, 0.5):>9.0f}"
            f"{percentile(ok, 0.99):>9.0f}{max(latencies):>9.0f}"
        )
    refusals = Counter((s.status, s.refusal) for s in run.samples if s.refusal)
    print("refusals (status, by whom): " + ", ".join(f"{status} {who}: {n}" for (status, who), n in refusals.items()))
    bad = Counter((s.phase, s.route, s.status, s.retry_after) for s in run.samples if not answered(s))
    if bad:
        print("not answered as the contract says (phase, route, status, Retry-After): " + str(dict(bad)))

    print(
        f"\n{'window':<14}{'phase':<10}{'offered/s':>10}{'2xx/s':>8}{'429':>6}{'503':>6}{'other':>7}"
        f"{'rss MB':>9}{'controller':>11}{'load avg':>10}"
    )
    total = run.now()
    width = WINDOW_S
    for w in range(math.ceil(total / width)):
        lo, hi = w * width, (w + 1) * width
        inside = [s for s in run.samples if lo <= s.at_s < hi and s.route in ROUTES_OF_MIX]
        phases = Counter(s.phase for s in run.samples if lo <= s.at_s < hi)
        rss = [mb for at, mb in run.rss if lo <= at < hi]
        load = [value for at, value in run.load if lo <= at < hi]
        good = sum(s.status in ("200", "202") for s in inside)
        refused = Counter(s.status for s in inside)
        print(
            f"{f'{lo:.0f}-{hi:.0f} s':<14}{(phases.most_common(1)[0][0] if phases else ''):<10}"
            f"{len(inside) / width:>10.2f}{good / width:>8.2f}{refused['429']:>6}{refused['503']:>6}"
            f"{len(inside) - good - refused['429'] - refused['503']:>7}"
            f"{(rss[-1].total() if rss else math.nan):>9.0f}"
            f"{(rss[-1][CONTROLLER_TITLE] if rss else math.nan):>11.0f}{(max(load) if load else math.nan):>10.1f}"
        )
    first, last = run.rss[0][1], run.rss[-1][1]
    peak = max(mb.total() for _, mb in run.rss)
    print(
        f"\nRSS of the Ray cluster: {first.total():.0f} MB after warm-up, peak {peak:.0f} MB, "
        f"{last.total():.0f} MB at the end ({figures['rss_growth_mb']:+.0f} MB)"
    )
    print(
        "growth by process: " + ", ".join(f"{t} {mb:+.0f} MB" for t, mb in figures["rss_growth_by_process_mb"].items())
    )
    moments = {"start": 0.0, "overload": run.marks["overload"], "+60 s": run.marks["overload"] + 60}
    moments |= {name: at for name, at in run.marks.items() if name.startswith("overload ") or name.startswith("drain")}
    moments["end"] = run.now()
    at = {name: run.rss_at(at_s) for name, at_s in moments.items()}
    print(f"\n{'RSS MB at':<36}" + "".join(f"{name:>12}" for name in moments))
    for title in list(figures["rss_growth_by_process_mb"])[:8]:
        print(f"{title:<36}" + "".join(f"{mb[title]:>12.0f}" for mb in at.values()))
    print(f"workflows: {figures['workflows']}; lost {figures['lost']}")
    print(f"peak requests waiting in the scheduler, per service: {dict(sorted(run.queued.items()))}")


def summarise(run: Run) -> dict[str, Any]:
    duration = run.now()
    ok: dict[str, list[float]] = defaultdict(list)
    for s in run.samples:
        if s.status.startswith("2"):
            ok[s.route].append(s.latency_ms)
    # Memory after the models' first calls against memory at the end: the first sample is taken
    # once the warm-up requests have loaded everything.
    growth = run.rss[-1][1].total() - run.rss[0][1].total()
    accepted = set(run.workflows)
    completed = sum(1 for wid in accepted if run.statuses.get(wid) == "completed")
    stuck = sum(1 for wid in accepted if run.statuses.get(wid) in ("pending", "running"))
    return {
        "duration_s": round(duration, 1),
        "requests": len(run.samples),
        "status_counts": dict(sorted(Counter(s.status for s in run.samples).items())),
        "p50_ms": {route: round(percentile(v, 0.50), 1) for route, v in sorted(ok.items())},
        "p99_ms": {route: round(percentile(v, 0.99), 1) for route, v in sorted(ok.items())},
        "rss_growth_mb": round(growth, 1),
        "workflows": {
            "submitted": len(accepted),
            "completed": completed,
            "lost": len(accepted) - completed - stuck,
            "stuck": stuck,
        },
    }


def print_table(run: Run, figures: dict[str, Any], args: argparse.Namespace) -> None:
    duration = figures["duration_s"]
    print(
        f"load: {args.duration_s:g} s of arrivals rising {args.rate_start:g} → {args.rate_end:g} req/s, "
        f"{args.tenants} tenants, then up to {args.drain_s:g} s of drain; {duration:g} s in all"
    )
    print(
        f"{'route':<28}{'requests':>9}{'req/s':>8}{'2xx':>7}{'429':>6}{'503':>6}{'other':>7}{'p50 ms':>9}{'p99 ms':>9}"
    )
    by_route: dict[str, Counter[str]] = defaultdict(Counter)
    for s in run.samples:
        by_route[s.route][s.status] += 1
    for route, counts in sorted(by_route.items()):
        total = sum(counts.values())
        good = sum(n for status, n in counts.items() if status.startswith("2"))
        other = total - good - counts["429"] - counts["503"]
        p50, p99 = figures["p50_ms"].get(route, math.nan), figures["p99_ms"].get(route, math.nan)
        print(
            f"{route:<28}{total:>9}{total / duration:>8.2f}{good:>7}{counts['429']:>6}{counts['503']:>6}"
            f"{other:>7}{p50:>9.0f}{p99:>9.0f}"
        )
    print(f"status counts: {figures['status_counts']}; arrivals shed by the generator's bounds: {run.shed}")

    print(
        f"\n{'window':<14}{'offered/s':>10}{'2xx/s':>8}{'429':>6}{'503':>6}{'chat p50 ms':>13}{'rss MB':>9}"
        f"{'load avg':>10}"
    )
    width = args.duration_s / WINDOWS
    for w in range(WINDOWS):
        lo, hi = w * width, (w + 1) * width
        inside = [s for s in run.samples if lo <= s.at_s < hi and s.route != ROUTE_LIST]
        chat = [s.latency_ms for s in inside if s.route == ROUTE_CHAT and s.status == "200"]
        rss = [mb.total() for at, mb in run.rss if lo <= at < hi]
        load = [value for at, value in run.load if lo <= at < hi]
        print(
            f"{f'{lo:.0f}-{hi:.0f} s':<14}{len(inside) / width:>10.2f}"
            f"{sum(s.status.startswith('2') for s in inside) / width:>8.2f}"
            f"{sum(s.status == '429' for s in inside):>6}{sum(s.status == '503' for s in inside):>6}"
            f"{(percentile(chat, 0.5) if chat else math.nan):>13.0f}{(max(rss) if rss else math.nan):>9.0f}"
            f"{(max(load) if load else math.nan):>10.1f}"
        )

    first, last = run.rss[0][1], run.rss[-1][1]
    peak = max(mb.total() for _, mb in run.rss)
    print(
        f"\nRSS of the Ray cluster: {first.total():.0f} MB after warm-up, peak {peak:.0f} MB, "
        f"{last.total():.0f} MB at the end"
    )
    last.subtract(first)
    print("largest growth: " + ", ".join(f"{title} {mb:+.0f} MB" for title, mb in last.most_common(5)))
    ended = Counter(run.statuses.get(wid, "missing") for wid in run.workflows)
    print(f"workflows: {figures['workflows']}; final statuses {dict(ended)}")
    print(f"peak requests waiting in the scheduler, per service: {dict(sorted(run.queued.items()))}")


async def warm_up(base: str) -> None:
    """One call of each kind, so that model loading is not counted as load."""
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token('warm-up')}"}, timeout=300
    ) as http:
        for _, path, body, _ in MIX:
            if path != "/v1/workflows":
                (await http.post(path, json=body)).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s of arrivals instead of 600")
    parser.add_argument("--overload", action="store_true", help="capacity, then 3× capacity open-loop (see above)")
    parser.add_argument("--duration-s", type=float, help="of arrivals (600; --overload: 300)")
    parser.add_argument("--rate-start", type=float, default=0.5, help="arrivals per second at the start")
    parser.add_argument("--rate-end", type=float, default=5.0, help="arrivals per second at the end")
    parser.add_argument("--tenants", type=int, help="4; --overload: 20")
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per request")
    parser.add_argument("--drain-s", type=float, help="for the workflows to end (180; --overload: 300)")
    parser.add_argument("--capacity-s", type=float, default=60.0, help="--overload: the closed-loop phase")
    parser.add_argument("--capacity-clients", type=int, default=16, help="--overload: its clients")
    parser.add_argument("--overload-factor", type=float, default=3.0, help="--overload: arrivals / capacity")
    parser.add_argument("--periods", type=int, default=1, help="--overload: overload and drain this many times")
    parser.add_argument("--poll-s", type=float, default=5.0, help="--overload: between polls of the workflows")
    parser.add_argument("--app-args", type=json.loads, default={}, help="JSON: the platform's app args")
    parser.add_argument(
        "--trace",
        type=lambda names: [tuple(name.split("@")) for name in names.split(",")],
        default=[],
        help="tracemalloc in these named actors (name@namespace, comma-separated), e.g. "
        f"{CONTROLLER_NAME}@{SERVE_NAMESPACE},labubu-workflows@labubu,labubu-scheduler@labubu",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=8313)
    args = parser.parse_args()
    defaults = (300.0, 20, 300.0) if args.overload else (60.0, 4, 90.0) if args.quick else (600.0, 4, 180.0)
    for name, default in zip(("duration_s", "tenants", "drain_s"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)

    import ray

    base = start_platform(args.port, args.app_args)
    asyncio.run(warm_up(base))
    traced_actors = {name: ray.get_actor(name, namespace=namespace) for name, namespace in args.trace}
    ray.get([actor.__ray_call__.remote(start_trace) for actor in traced_actors.values()])
    if args.overload:
        run, capacity, rate = asyncio.run(overload(base, args))
        figures = summarise_overload(run, capacity, rate, args)
        print_overload(run, figures, args)
    else:
        run = asyncio.run(generate(base, args))
        figures = summarise(run)
        print_table(run, figures, args)
    for name, actor in traced_actors.items():
        traced = cast(dict[str, Any], ray.get(actor.__ray_call__.remote(traced_growth, 12)))
        print(
            f"\n{name}: Python heap (tracemalloc) {traced['python_mb']:+.2f} MB "
            f"(tracemalloc's own memory: {traced['tracing_mb']:.1f} MB); the sites that grew most:"
        )
        print_sites(traced)
    print(json.dumps(figures))
    ray.shutdown()


if __name__ == "__main__":
    main()
