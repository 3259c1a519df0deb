"""The Serve deployment that every modality uses: a failover chain of backends behind two methods.

`ModalityServer` is plain Python (tests build it directly); `modality_deployment(service)` wraps it
as a Ray Serve deployment named after the service. Replica counts, autoscaling, CPUs and GPUs come
from the Serve config's `deployments:` section, so the same class runs on a laptop and on GPUs.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from deployments.config import BackendSpec, ServiceConfig
from deployments.control import ReplicaControl
from deployments.failover import BackendChain
from deployments.types import Backend, ModelUnavailable
from state.store import StateStore

log = logging.getLogger(__name__)


class UnloadableBackend:
    """Stands in for a backend whose code cannot even be imported, so the chain reports why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.model = name
        self.reason = reason

    def load(self) -> None:
        raise ModelUnavailable(self.reason)

    async def run(self, request: Any) -> Any:
        raise ModelUnavailable(self.reason)


def build_backend(spec: BackendSpec) -> Backend:
    """An unloaded backend, its class imported only here, in the replica that runs it: the ingress
    and the tests of one modality never import another modality's engines (torch, llama.cpp, SDKs)."""
    module_name, class_name = spec.path.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:  # an optional extra that is not installed: report, keep serving
        return UnloadableBackend(spec.name, f"cannot import its engine ({exc}); install the extra it needs")
    return cls(**spec.options)


class ModalityServer:
    """One replica of one modality.

    `config` says which backends, in which order, and how the failover chain treats them.

    `config.concurrency` is how many model calls the backend truly runs at once; calls beyond it wait here.
    The deployment's `max_ongoing_requests` is two more: the scheduler lets one call wait here per
    replica (which tells Serve's autoscaler there is a backlog) and one slot stays free for status
    and health calls (serve_app/capacity.py).

    With a `store`, the replica follows the admin's arrangement of its backends and reports their
    health (deployments/control.py), both in the background, never on a call's path; it must then
    be made inside its event loop, as Serve does.
    """

    def __init__(self, config: ServiceConfig, store: StateStore | None = None) -> None:
        service = config.service
        self.service = service
        backends = [build_backend(spec) for spec in config.backends]
        self.chain = BackendChain(
            backends,
            timeout_s=config.timeout_s,
            failure_threshold=config.failure_threshold,
            cooldown_s=config.cooldown_s,
        )
        self.chain.load()
        self.slots = asyncio.Semaphore(config.concurrency)
        # Background calls (LLMRequest.background: batch lines, low work) wait for their own
        # slots, not for these: a foreground call then reaches the backend beside a running
        # background one, which yields the engine to it (deployments/llm.py: EngineTurns).
        self.background_slots = asyncio.Semaphore(config.concurrency)
        self.control = ReplicaControl(store, service, replica_name(), self.chain) if store is not None else None
        if self.control is not None:
            self.control.follow()  # the stored arrangement from the first call on; then in the background
            loop = asyncio.get_running_loop()
            self.following = loop.create_task(self.control.follow_forever())
            self.reporting = loop.create_task(self.control.report_forever())

    async def run(self, request: Any) -> Any:
        if not self.chain.ready():
            raise ModelUnavailable(self.chain.unavailable_reason())
        async with self._slots(request):
            return await self.chain.run(request)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        if not self.chain.ready():
            raise ModelUnavailable(self.chain.unavailable_reason())
        async with self._slots(request):
            async for chunk in self.chain.stream(request):
                yield chunk

    def _slots(self, request: Any) -> asyncio.Semaphore:
        return self.background_slots if getattr(request, "background", False) else self.slots

    def check_health(self) -> None:
        """Serve's health check: a replica whose every backend keeps failing is replaced.

        Backends that never loaded (weights missing offline) do not fail it: a new replica would
        not find them either, and `/readyz` already says why.
        """
        if self.chain.broken():
            raise RuntimeError(f"{self.service}: every backend is failing: {self.chain.unavailable_reason()}")

    async def status(self) -> dict[str, Any]:
        """Readiness and the backends in failover order, for `/readyz` and `/v1/models`."""
        return {
            "service": self.service,
            "max_ongoing_requests": max_ongoing_requests(),
            "ready": self.chain.ready(),
            "reason": None if self.chain.ready() else self.chain.unavailable_reason(),
            "backends": [info.__dict__ for info in self.chain.infos()],
            "health": self.chain.health(),
        }


def replica_context() -> Any | None:
    """Serve's context of this replica, or None outside a Serve replica."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context()
    except RayServeException:
        return None


def max_ongoing_requests() -> int | None:
    """This replica's `max_ongoing_requests`, or None outside a Serve replica."""
    # Serve keeps the deployment config on the replica context; the public API has no getter yet.
    config = getattr(replica_context(), "_deployment_config", None)
    return getattr(config, "max_ongoing_requests", None)


def replica_name() -> str:
    """Serve's id of this replica; outside Serve, the process id."""
    context = replica_context()
    return str(context.replica_id.unique_id) if context is not None else f"pid-{os.getpid()}"


class ModalityReplica(ModalityServer):
    """`ModalityServer` as Serve runs it: it opens the state store itself, in its own process.

    `open_store` travels instead of an opened store, whose pickled state would carry the store's URL,
    and the Redis password in it, into the deployment's arguments, which Serve keeps in clear.
    """

    def __init__(self, config: ServiceConfig, open_store: Callable[[], StateStore] | None = None) -> None:
        super().__init__(config, open_store() if open_store is not None else None)


def modality_deployment(service: str) -> Any:  # a serve.Deployment
    """The Serve deployment of one modality, with CPU-friendly defaults the config may override."""
    from ray import serve

    return serve.deployment(
        ModalityReplica,
        name=service,
        max_ongoing_requests=3,
        ray_actor_options={"num_cpus": 0.2},
        health_check_period_s=10,
        graceful_shutdown_timeout_s=30,
        logging_config={"encoding": "JSON"},
    )
