"""Keeps the scheduler's per-service dispatch limits in step with Serve's replicas.

A service may hold `running replicas × (max_ongoing_requests − 1)` grants at once: as Serve's
autoscaler adds replicas, the scheduler lets more requests through, and while a backlog waits the
replicas run at one request above their backend's concurrency, which is what makes the autoscaler
(whose target is that concurrency) add replicas. The one slot left per replica keeps status and
health calls from queueing behind model calls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from modalities import SERVICES

log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 2.0


def dispatch_limit(running_replicas: int, max_ongoing_requests: int) -> int:
    """Grants a service may hold: never 0, so calls fail fast at Serve rather than wait forever."""
    return max(1, running_replicas * max(1, max_ongoing_requests - 1))


def running_replicas(app_name: str) -> dict[str, int]:
    """Each deployment of the app: how many of its replicas are running, as the controller says.

    Read from the controller's details as it sends them (a dict), not through `serve.status()`:
    that builds Serve's pydantic models of every deployment's config, and each one cloudpickles
    its request router class, which walks `sys.modules`. In the ingress that cost about 330 ms of
    CPU a call, holding the GIL against the requests it serves, every `FOLLOW_INTERVAL_S`
    (measured with py-spy); the dict costs the caller under a millisecond.

    `_get_global_client` is Serve's own client, not public API: `serve.status()` itself starts with
    the same `get_serve_details()` (Ray 2.60); a Ray upgrade must keep this test passing:
    tests/serve_app/test_autoscaling.py compares the two.
    """
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running")
    details = client.get_serve_details()
    deployments = details["applications"][app_name]["deployments"]
    # A replica's state is Serve's `ReplicaState`, a str enum (or its plain value).
    return {name: sum(r["state"] == "RUNNING" for r in d["replicas"]) for name, d in deployments.items()}


async def follow_capacity(platform: Any, app_name: str) -> None:
    """Forever: read the replicas of each modality and set the scheduler's limits to match."""
    while True:
        try:
            replicas = await asyncio.to_thread(running_replicas, app_name)
            limits = {}
            for service in SERVICES:
                max_ongoing = (await platform.status(service)).get("max_ongoing_requests") or 2
                limits[service] = dispatch_limit(replicas[service], int(max_ongoing))
            # Sent every round, not only when they change here: a restarted scheduler starts again
            # from its configured limits. The actor does nothing for the ones it already has.
            changed = await platform.scheduler.call("set_dispatch_limits", limits)
            for service, limit in changed.items():
                log.info("dispatch limit of %s: %d (%d replicas)", service, limit, replicas[service])
        except Exception:  # the controller may be busy or restarting: try again next round
            log.exception("could not follow the deployments' capacity")
        await asyncio.sleep(FOLLOW_INTERVAL_S)
