"""The platform's own ceiling: requests/s through ingress, scheduler and replica, against Serve's floor.

Both run on one local Ray cluster, in one run, and take turns (alternating rounds, each the same
closed loop of concurrent clients for the same time):

- the platform: `POST /v1/chat/completions` with a JWT, through the ingress (auth, the body's checks,
  the scheduler's admission and release, metering) to the `llm` replica, whose only backend is the
  `echo_fixture` benchmark fixture (deployments/echo.py: it answers at once, no model);
- Serve's floor: a bare FastAPI ingress deployment calling a deployment that answers at once (no
  auth, no admission, no model), with the same `max_ongoing_requests` on both hops.

The tenant's quotas are raised so that the scheduler admits every call (its rate limit would
otherwise be what is measured); the run checks that every call was admitted (the tenant's usage).

    flock /tmp/labubu-bench.lock .venv/bin/python benchmarks/ceiling.py [--seconds 10 --rounds 3 --clients 16]

Last line: {"platform_rps": A, "floor_rps": B, "ratio": A/B, "p99_ms": P} (P: the platform's p99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from _platform import admitted_llm_calls, percentile, start_platform, token
from fastapi import Body, FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

TENANT = "ceiling"
MAX_ONGOING = 34  # the llm replica's and the floor's answering deployment's
CHAT = {"model": "llm", "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 8, "temperature": 0}

floor_app = FastAPI()


@serve.deployment(max_ongoing_requests=MAX_ONGOING, ray_actor_options={"num_cpus": 0.1})
class Answer:
    async def run(self, value: Any) -> Any:
        return value


@serve.deployment(max_ongoing_requests=200, ray_actor_options={"num_cpus": 0.1})  # the platform's ingress's
@serve.ingress(floor_app)
class FloorIngress:
    """Serve's two hops (HTTP proxy to ingress, ingress to a deployment), nothing of the platform's."""

    def __init__(self, answer: DeploymentHandle) -> None:
        self.answer = answer.options(_by_reference=False)  # the transport the platform's ingress uses

    # Builtin annotations only: Serve pickles this class by value (see serve_overhead.py).
    @floor_app.post("/echo")
    async def echo_route(self, body: dict = Body()) -> dict:  # noqa: B008  (FastAPI's idiom)
        return {"echo": await self.answer.run.remote(body)}


def platform_args() -> dict[str, Any]:
    unlimited = {"max_concurrency": 10_000, "rate_per_s": 1_000_000.0, "burst": 1_000_000.0, "max_queued": 100_000}
    return {
        "services": {"llm": {"backends": [{"name": "echo_fixture"}], "concurrency": MAX_ONGOING - 2}},
        "deployment_options": {"llm": {"max_ongoing_requests": MAX_ONGOING}},
        "scheduler": {"tenant_defaults": unlimited},
    }


async def closed_loop(
    clients: int, seconds: float, call: Callable[[aiohttp.ClientSession], Awaitable[None]]
) -> list[float]:
    """`clients` loops calling back to back for `seconds`; each call's milliseconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                await call(session)
                latencies.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(loop() for _ in range(clients)))
    return latencies


def caller(
    url: str, body: dict[str, Any], headers: dict[str, str]
) -> Callable[[aiohttp.ClientSession], Awaitable[None]]:
    async def call(session: aiohttp.ClientSession) -> None:
        async with session.post(url, json=body, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status} {await response.text()}")

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per target per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--port", type=int, default=8421)
    args = parser.parse_args()

    import ray

    base = start_platform(args.port, platform_args())
    serve.run(FloorIngress.bind(Answer.bind()), name="floor", route_prefix="/floor")
    platform_call = caller(f"{base}/v1/chat/completions", CHAT, {"Authorization": f"Bearer {token(TENANT)}"})
    floor_call = caller(f"{base}/floor/echo", CHAT, {})
    targets = {"platform": platform_call, "floor": floor_call}
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    busy_s: dict[str, float] = dict.fromkeys(targets, 0.0)
    warm: dict[str, int] = {}

    async def run() -> None:
        for name, call in targets.items():  # warm: connections, the replicas' first calls
            warm[name] = len(await closed_loop(args.clients, 1.0, call))
        for index in range(args.rounds):
            names = list(targets) if index % 2 == 0 else list(reversed(targets))
            for name in names:
                start = time.perf_counter()
                latencies[name] += await closed_loop(args.clients, args.seconds, targets[name])
                busy_s[name] += time.perf_counter() - start

    asyncio.run(run())
    time.sleep(2)  # the usage statistics are written beside the calls, within moments
    admitted = admitted_llm_calls(base, TENANT)
    platform_calls = warm["platform"] + len(latencies["platform"])

    rps = {name: len(latencies[name]) / busy_s[name] for name in targets}
    print(f"{'target':<10} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name in targets:
        values = latencies[name]
        print(
            f"{name:<10} {len(values):>9} {rps[name]:>8.1f} {statistics.median(values):>8.1f} "
            f"{percentile(values, 0.99):>8.1f}"
        )
    print(
        f"{args.rounds} alternating rounds of {args.seconds:g} s per target, {args.clients} concurrent clients; "
        f"platform calls admitted by the fair scheduler: {admitted} of {platform_calls}"
    )
    if admitted != platform_calls:
        print(f"WARNING: {platform_calls - admitted} platform calls are missing from the admitted count")
    result = {
        "platform_rps": round(rps["platform"], 1),
        "floor_rps": round(rps["floor"], 1),
        "ratio": round(rps["platform"] / rps["floor"], 3),
        "p99_ms": round(percentile(latencies["platform"], 0.99), 1),
    }
    print(json.dumps(result))
    ray.shutdown()


if __name__ == "__main__":
    main()
