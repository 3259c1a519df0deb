"""The live half of benchmarks/fairness.py: the scheduler actor on a real Ray cluster.

1. Overhead: grant + release round trips from one client process, and grants per second from one
   and from two client processes (each with many calls in flight), against a service whose
   dispatch limit never binds, so the actor's own speed is what is measured.
2. A calibrated live run of the `weights` trace: tenants a (weight 1, cost 10) and b (weight 3,
   cost 1) keep a service of 2 slots backlogged; each grant is held for cost × 5 ms. The served
   cost per weight must come out even, as in the simulation.

`measure_actor()` returns the "actor" object of the benchmark's JSON line.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import ray

from scheduler.actor import SchedulerActor
from scheduler.client import SchedulerClient

ROUND_TRIPS = 2000
THROUGHPUT_GRANTS = 4000


def _actor(services: dict[str, dict[str, Any]], tenants: dict[str, dict[str, Any]]) -> Any:
    config = {
        "services": services,
        "tenant_defaults": {"max_concurrency": 100_000, "rate_per_s": 1e9, "burst": 1e9, "max_queued": 1_000_000},
    }
    actor = ray.remote(SchedulerActor).options(max_concurrency=100_000, num_cpus=0).remote(config, None)
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
        actor = _actor({"svc": {"dispatch_limit": 1_000_000}}, {})
        asyncio.run(_round_trips(actor, 200))  # warm up
        times = sorted(asyncio.run(_round_trips(actor, ROUND_TRIPS)))
        one_client = asyncio.run(_grant_flood(actor, THROUGHPUT_GRANTS))
        per_process = THROUGHPUT_GRANTS // 2
        two_clients = sum(ray.get([_flood_from_another_process.remote(actor, per_process) for _ in range(2)]))
        live = _actor({"work": {"dispatch_limit": 2}}, {"a": {"weight": 1.0}, "b": {"weight": 3.0}})
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
