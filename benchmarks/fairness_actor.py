"""The live half of benchmarks/fairness.py: the scheduler actor on a real Ray cluster.

1. Overhead: grant + release round trips from one client process, and grants per second from one
   and from two client processes (each with many calls in flight), against a service whose
   dispatch limit never binds, so the actor's own speed is what is measured.
2. A calibrated live run of the `weights` trace: tenants a (weight 1, cost 10) and b (weight 3,
   cost 1) keep a service of 2 slots backlogged; each grant is held for cost × 5 ms. The served
   cost per weight must come out even, as in the simulation.

`measure_actor()` returns the "actor" object of the benchmark's JSON line. `measure_capacity()`
(run by `fairness.py --scale --actor`) measures one actor's grant capacity: 8 caller processes,
each batching its grants and releases through `SchedulerClient`, over the same time window.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import ray

from scheduler.actor import SchedulerActor
from scheduler.client import SchedulerClient
from scheduler.settings import SchedulerConfig, ServiceLimits, TenantSettings

ROUND_TRIPS = 2000
THROUGHPUT_GRANTS = 4000


def _actor(services: dict[str, int], tenants: dict[str, dict[str, Any]]) -> Any:
    """A scheduler actor with these services' dispatch limits, and tenant limits that never bind."""
    config = SchedulerConfig(
        {name: ServiceLimits(limit) for name, limit in services.items()},
        TenantSettings(max_concurrency=100_000, rate_per_s=1e9, burst=1e9, max_queued=1_000_000),
    )
    actor = ray.remote(SchedulerActor).options(max_concurrency=100_000, num_cpus=0).remote(config)
    for tenant, settings in tenants.items():
        ray.get(actor.set_tenant.remote(tenant, settings))
    return actor


async def _round_trips(actor: Any, count: int) -> list[float]:
    """Milliseconds of `grant` awaited plus `release` sent, one at a time (what a caller waits)."""
    client = SchedulerClient(actor)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        ticket = await client.grant("svc", "t", 1.0)
        client.release(ticket, 1.0)
        times.append((time.perf_counter() - start) * 1000)
    await actor.ping.remote()  # the releases have landed
    return times


async def _grant_flood(actor: Any, count: int, in_flight: int = 64) -> float:
    """Grants per second with `in_flight` callers at once, each releasing at once."""
    client = SchedulerClient(actor)
    semaphore = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with semaphore:
            ticket = await client.grant("svc", "t", 1.0)
            client.release(ticket, 1.0)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    await actor.ping.remote()
    return count / (time.perf_counter() - start)


@ray.remote(num_cpus=0)
def _flood_from_another_process(actor: Any, count: int) -> float:
    return asyncio.run(_grant_flood(actor, count))


async def _grants_until(actor: Any, tenants: int, start_at: float, end_at: float, in_flight: int) -> tuple[int, bool]:
    """Grant + release in a loop from `in_flight` callers at once, from `start_at` to `end_at`
    (wall clock, shared by the processes); the grants made in that window, and whether this process
    was ready when it opened."""
    client = SchedulerClient(actor)
    client.release(await client.grant("svc", "t0", 1.0), 1.0)  # the first call connects to the actor
    on_time = time.time() <= start_at
    await asyncio.sleep(max(0.0, start_at - time.time()))
    counts = [0] * in_flight

    async def caller(index: int) -> None:
        tenant = f"t{index % tenants}"
        while time.time() < end_at:
            ticket = await client.grant("svc", tenant, 1.0)
            client.release(ticket, 1.0)
            counts[index] += 1

    await asyncio.gather(*(caller(i) for i in range(in_flight)))
    return sum(counts), on_time


@ray.remote(num_cpus=0)
def _capacity_process(actor: Any, tenants: int, start_at: float, end_at: float, in_flight: int) -> tuple[int, bool]:
    return asyncio.run(_grants_until(actor, tenants, start_at, end_at, in_flight))


def measure_capacity(
    processes: int = 8, seconds: float = 5.0, in_flight: int = 64, tenants: int = 64
) -> dict[str, Any]:
    """One actor's grants per second with `processes` caller processes, each with `in_flight` callers
    whose grants it batches (one `submit_many` call per turn of its event loop), across `tenants`
    tenants, on a service whose dispatch limit never binds: the actor's own capacity."""
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        actor = _actor({"svc": 1_000_000}, {})
        ray.get(actor.ping.remote())
        # Worker processes take seconds to start on a busy machine: all count in the same window.
        start_at = time.time() + 5.0 + processes
        refs = [
            _capacity_process.remote(actor, tenants, start_at, start_at + seconds, in_flight) for _ in range(processes)
        ]
        results = ray.get(refs)
        grants = sum(count for count, _ in results)
        return {
            "processes": processes,
            "processes_on_time": sum(on_time for _, on_time in results),
            "in_flight_per_process": in_flight,
            "seconds": seconds,
            "grants": grants,
            "grants_per_s": grants / seconds,
        }
    finally:
        if started_ray:
            ray.shutdown()


async def _weighted_run(actor: Any, seconds: float) -> dict[str, float]:
    """Two backlogged tenants on two slots; the cost each was served, per weight."""
    client = SchedulerClient(actor)
    served = {"a": 0.0, "b": 0.0}
    deadline = time.monotonic() + seconds

    async def tenant_loop(tenant: str, cost: float) -> None:
        while time.monotonic() < deadline:
            async with client.admitted("work", tenant, cost) as admission:
                served[tenant] += cost
                await asyncio.sleep(cost * 0.005)
                admission.actual_cost = cost

    # Several callers per tenant keep both queues non-empty all along.
    await asyncio.gather(*(tenant_loop("a", 10.0) for _ in range(4)), *(tenant_loop("b", 1.0) for _ in range(4)))
    return {"a": served["a"] / 1.0, "b": served["b"] / 3.0}


def measure_actor() -> dict[str, Any]:
    """The "actor" figures: grant+release latency and throughput, and the live weighted share."""
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        actor = _actor({"svc": 1_000_000}, {})
        asyncio.run(_round_trips(actor, 200))  # warm up
        times = sorted(asyncio.run(_round_trips(actor, ROUND_TRIPS)))
        one_client = asyncio.run(_grant_flood(actor, THROUGHPUT_GRANTS))
        per_process = THROUGHPUT_GRANTS // 2
        two_clients = sum(ray.get([_flood_from_another_process.remote(actor, per_process) for _ in range(2)]))
        live = _actor({"work": 2}, {"a": {"weight": 1.0}, "b": {"weight": 3.0}})
        normalised = asyncio.run(_weighted_run(live, 8.0))
        values = list(normalised.values())
        jain = sum(values) ** 2 / (len(values) * sum(v * v for v in values))
        return {
            "grant_release_p50_ms": round(statistics.median(times), 3),
            "grant_release_p99_ms": round(times[int(0.99 * (len(times) - 1))], 3),
            "grants_per_s_one_client": round(one_client),
            "grants_per_s_two_clients": round(two_clients),
            "live_weighted_jain": round(jain, 4),
            "live_served_per_weight": {k: round(v, 1) for k, v in normalised.items()},
        }
    finally:
        if started_ray:
            ray.shutdown()
