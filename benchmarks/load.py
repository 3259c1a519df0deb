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
from typing import Any

import httpx
import psutil
from _platform import start_platform, token  # beside this file; sets up the path and env

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
FINAL = {"completed", "failed", "cancelled"}
OBSERVE_EVERY_S = 5.0
POLL_EVERY_S = 3.0
WINDOWS = 10  # rows of the timeline


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least `q` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def cluster_rss_mb() -> Counter[str]:
    """Resident memory (MB) of the local Ray cluster's processes, by process title (`ray::ServeReplica:
    labubu:llm`, `raylet`, ...): this driver started them all."""
    found: Counter[str] = Counter()
    for child in psutil.Process().children(recursive=True):
        try:
            title = os.path.basename(child.cmdline()[0])
            found[title] += child.memory_info().rss / 2**20
        except (psutil.Error, IndexError):  # a worker that just exited
            continue
    return found


@dataclass
class Sample:
    route: str
    status: str
    at_s: float
    latency_ms: float


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

    def now(self) -> float:
        return time.monotonic() - self.started

    async def timed(self, route: str, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response | None:
        start = time.monotonic()
        response: httpx.Response | None = None
        try:
            response = await call()
            status = str(response.status_code)
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.HTTPError:
            status = "connection_error"
        self.samples.append(Sample(route, status, start - self.started, (time.monotonic() - start) * 1000))
        return response


async def send(run: Run, http: httpx.AsyncClient, tenant: str, route: str, path: str, body: dict[str, Any]) -> None:
    response = await run.timed(route, lambda: http.post(path, json=body))
    if route == ROUTE_SUBMIT and response is not None and response.status_code == 202:
        run.workflows[response.json()["workflow_id"]] = tenant


async def poll_workflows(run: Run, clients: dict[str, httpx.AsyncClient]) -> None:
    """One paged list call per tenant: the status of every workflow the run submitted."""
    for http in clients.values():
        offset, total = 0, 1
        while offset < total:
            params = {"limit": 200, "offset": offset}
            response = await run.timed(
                ROUTE_LIST, lambda http=http, params=params: http.get("/v1/workflows", params=params)
            )
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


async def generate(base: str, args: argparse.Namespace) -> Run:
    tenants = [f"load-{i}" for i in range(args.tenants)]
    clients = {
        t: httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token(t)}"}, timeout=args.timeout_s)
        for t in tenants
    }
    rng = random.Random(args.seed)
    run = Run()

    admin = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token('ops', 'admin')}"}, timeout=30)

    async def observe() -> None:
        run.rss.append((run.now(), await asyncio.to_thread(cluster_rss_mb)))
        run.load.append((run.now(), os.getloadavg()[0]))
        response = await admin.get("/v1/admin/scheduler")
        if response.status_code == 200:
            for service, state in response.json()["services"].items():
                run.queued[service] = max(run.queued[service], state["queued"])

    stop = asyncio.Event()
    watchers = [
        asyncio.create_task(every(OBSERVE_EVERY_S, observe, stop)),
        asyncio.create_task(every(POLL_EVERY_S, lambda: poll_workflows(run, clients), stop)),
    ]
    in_flight: set[asyncio.Task[None]] = set()
    sent = 0
    weights = [share for *_, share in MIX]
    while (elapsed := run.now()) < args.duration_s:
        rate = args.rate_start + (args.rate_end - args.rate_start) * elapsed / args.duration_s
        await asyncio.sleep(rng.expovariate(rate))
        if run.now() >= args.duration_s:
            break
        route, path, body, _ = rng.choices(MIX, weights)[0]
        if sent >= args.max_requests or len(in_flight) >= args.max_in_flight:
            run.shed += 1
            continue
        sent += 1
        tenant = rng.choice(tenants)
        task = asyncio.create_task(send(run, clients[tenant], tenant, route, path, body))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    drain_end = time.monotonic() + args.drain_s
    while unfinished(run) and time.monotonic() < drain_end:
        await asyncio.sleep(POLL_EVERY_S)
    stop.set()
    await asyncio.gather(*watchers)
    await poll_workflows(run, clients)
    await observe()
    for http in [*clients.values(), admin]:
        await http.aclose()
    return run


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
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--rate-start", type=float, default=0.5, help="arrivals per second at the start")
    parser.add_argument("--rate-end", type=float, default=5.0, help="arrivals per second at the end")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per request")
    parser.add_argument("--drain-s", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=8313)
    args = parser.parse_args()
    if args.quick:
        args.duration_s, args.drain_s = 60.0, 90.0

    import ray

    base = start_platform(args.port)
    asyncio.run(warm_up(base))
    run = asyncio.run(generate(base, args))
    figures = summarise(run)
    print_table(run, figures, args)
    print(json.dumps(figures))
    ray.shutdown()


if __name__ == "__main__":
    main()
