"""How callers use the scheduler actor: get or create it, and hold a grant around a model call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayTaskError

from scheduler.actor import ACTOR_NAME, NAMESPACE, SchedulerActor
from scheduler.errors import SchedulerError

# Every waiting grant holds one of the actor's concurrent calls (RAY_NOTES.md): keep this far above
# the longest queue the tenants' `max_queued` allow.
MAX_CONCURRENCY = 100_000


def scheduler_actor(config: dict[str, Any], store: Any = None) -> Any:
    """The cluster's scheduler actor, created on first use; later callers get the same one."""
    return (
        ray.remote(SchedulerActor)
        .options(
            name=ACTOR_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=-1,  # a call in flight when the actor dies runs again on its successor
            max_concurrency=MAX_CONCURRENCY,
            num_cpus=0,
        )
        .remote(config, store)
    )


def scheduler_error_of(exc: BaseException) -> SchedulerError | None:
    if isinstance(exc, SchedulerError):
        return exc
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, SchedulerError):
        return exc.cause
    return None


@dataclass
class Admission:
    """A grant held by a caller; set `actual_cost` before it ends to charge what was used."""

    ticket: int
    service: str
    tenant: str
    estimate: float
    actual_cost: float | None = None


class SchedulerClient:
    """Grants from the scheduler actor, with releases that never block the caller."""

    def __init__(self, actor: Any, renew_every_s: float = 10.0) -> None:
        self.actor = actor
        self.renew_every_s = renew_every_s  # well inside the actor's lease (30 s by default)
        self._releases: list[tuple[int, float | None]] = []

    async def grant(self, service: str, tenant: str, cost: float, priority: str = "default", wait: bool = True) -> int:
        ref = self.actor.grant.remote(service, tenant, cost, priority, wait)
        try:
            return int(await ref)
        except asyncio.CancelledError:
            ray.cancel(ref)  # the caller left: withdraw the request (or give the grant back)
            raise
        except RayTaskError as exc:
            error = scheduler_error_of(exc)
            if error is None:
                raise
            raise error from None

    def release(self, ticket: int, actual_cost: float | None) -> None:
        """Fire and forget: the caller's answer does not wait for the bookkeeping.

        Releases made in the same turn of the event loop go to the actor in one call (under load,
        many do). A callback, not a task: it still runs while a closing loop cancels its tasks.
        """
        if not self._releases:
            asyncio.get_running_loop().call_soon(self._flush_releases)
        self._releases.append((ticket, actual_cost))

    def _flush_releases(self) -> None:
        batch, self._releases = self._releases, []
        self.actor.release_many.remote(batch)

    @asynccontextmanager
    async def admitted(
        self, service: str, tenant: str, cost: float, priority: str = "default", wait: bool = True
    ) -> AsyncIterator[Admission]:
        """Hold a grant for the block; it is released when the block ends, whatever happens in it."""
        ticket = await self.grant(service, tenant, cost, priority, wait)
        admission = Admission(ticket, service, tenant, cost)
        renewal = asyncio.get_running_loop().create_task(self._renew(ticket))
        try:
            yield admission
        finally:
            renewal.cancel()
            self.release(ticket, admission.actual_cost)

    async def _renew(self, ticket: int) -> None:
        """Keep the grant's lease alive while the holder lives; if it dies, the lease runs out."""
        while True:
            await asyncio.sleep(self.renew_every_s)
            self.actor.renew.remote(ticket)

    async def call(self, method: str, *args: Any) -> Any:
        """An administrative call (`stats`, `set_tenant`, ...), with scheduler errors unwrapped."""
        try:
            return await getattr(self.actor, method).remote(*args)
        except RayTaskError as exc:
            error = scheduler_error_of(exc)
            if error is None:
                raise
            raise error from None
