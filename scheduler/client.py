"""How callers use the scheduler actor: get or create it, and hold a grant around a model call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayTaskError

from common.errors import unwrap
from scheduler.actor import ACTOR_NAME, NAMESPACE, SchedulerActor
from scheduler.errors import ServiceOverloaded, UnknownTicket
from scheduler.settings import DEFAULT_LEASE_S, SchedulerConfig, renewal_interval

# Every waiting grant holds one of the actor's concurrent calls (RAY_NOTES.md): keep this far above
# the longest queue the tenants' `max_queued` allow.
MAX_CONCURRENCY = 100_000


def scheduler_actor(
    config: SchedulerConfig, open_store: Callable[[], Any] | None = None, name: str = ACTOR_NAME
) -> Any:
    """The cluster's scheduler actor, created on first use; later callers get the same one.

    The actor is detached: it outlives the deployment that made it. A caller that finds it running
    hands it `config`, so that a redeploy's settings take effect without losing any tenant's state.
    `open_store` opens the state store inside the actor (see `SchedulerActor`); `name` is the
    actor's (tests make their own).
    """
    actor: Any = (
        ray.remote(SchedulerActor)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=-1,  # a call in flight when the actor dies runs again on its successor
            max_concurrency=MAX_CONCURRENCY,
            num_cpus=0,
        )
        .remote(config, open_store)
    )
    # A no-op for an actor just made. Not awaited: a replica's start does not wait on it, and it lands
    # within moments (an async actor may run a caller's next call first).
    actor.reconfigure.remote(config)
    return actor


@dataclass
class Admission:
    """A grant held by a caller; set `actual_cost` before it ends to charge what was used."""

    ticket: int
    service: str
    tenant: str
    estimate: float
    actual_cost: float | None = None


class SchedulerClient:
    """Grants from the scheduler actor, batched per turn of the caller's event loop.

    Every grant request and release made in one turn of the loop goes to the actor in one
    `submit_many` call, which answers each request at once; only a request that must wait makes a
    second call (`wait`). Releases never block the caller.
    """

    def __init__(self, actor: Any, lease_s: float = DEFAULT_LEASE_S, holder: str | None = None) -> None:
        """`holder`: the caller's name across restarts (a restartable actor's id). The first call of a
        client with the same holder makes the actor let go of this client's waits and grants."""
        self.actor = actor
        self.lease_s = lease_s  # the actor's (`SchedulerConfig.lease_s`): grants are renewed well inside it
        self.instance = None if holder is None else (holder, uuid.uuid4().hex)
        self._releases: list[tuple[int, float | None]] = []
        # (service, tenant, cost, priority, wait, max_wait_s) and the future of its answer.
        self._requests: list[tuple[tuple[Any, ...], asyncio.Future[tuple[str, Any]]]] = []
        self._flush_due = False

    async def grant(
        self,
        service: str,
        tenant: str,
        cost: float,
        priority: str = "default",
        wait: bool = True,
        max_wait_s: float | None = None,
    ) -> int:
        """Wait until the request may run; its ticket. Raises the scheduler's errors (`QuotaExceeded`, ...).

        With `max_wait_s`, a request is refused with `ServiceOverloaded`: at once when the scheduler
        expects its turn later than that, or when it is still queued after that long (the estimate
        can be wrong). An interactive caller is better told to come back than left to time out.
        """
        if max_wait_s is None:
            return await self._grant(service, tenant, cost, priority, wait, None)
        try:
            return await asyncio.wait_for(self._grant(service, tenant, cost, priority, wait, max_wait_s), max_wait_s)
        except asyncio.TimeoutError:
            raise ServiceOverloaded(
                f"{service} is saturated: no turn came within {max_wait_s:g} s", retry_after_s=max_wait_s
            ) from None

    async def _grant(
        self, service: str, tenant: str, cost: float, priority: str, wait: bool, max_wait_s: float | None
    ) -> int:
        while True:
            future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
            self._requests.append(((service, tenant, cost, priority, wait, max_wait_s), future))
            self._flush_soon()
            kind, value = await future  # if the caller leaves here, `_answer` gives the ticket back
            if kind == "error":
                raise value
            if kind == "granted":
                return int(value)
            try:
                return int(await self.actor.wait.remote(value))
            except asyncio.CancelledError:
                # The caller left: withdraw the request, or give back the grant that just came.
                # (`ray.cancel` of the wait would not do: a wait not yet started is dropped unseen.)
                self.actor.cancel.remote(value)
                raise
            except RayTaskError as exc:
                error = unwrap(exc)
                if not isinstance(error, UnknownTicket):
                    raise error or exc from None
                # The actor restarted while the request waited and forgot it: submit it again.

    def release(self, ticket: int, actual_cost: float | None) -> None:
        """Fire and forget: the caller's answer does not wait for the bookkeeping."""
        self._releases.append((ticket, actual_cost))
        self._flush_soon()

    def _flush_soon(self) -> None:
        # A callback, not a task: it still runs while a closing loop cancels its tasks, so no
        # release is lost at shutdown.
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        releases, self._releases = self._releases, []
        requests, self._requests = self._requests, []
        if not requests:
            if releases:
                self.actor.release_many.remote(releases)
            return
        ref = self.actor.submit_many.remote(releases, [request for request, _ in requests], self.instance)
        asyncio.get_running_loop().create_task(self._answer(ref, [future for _, future in requests]))

    async def _answer(self, ref: Any, futures: list[asyncio.Future[tuple[str, Any]]]) -> None:
        try:
            outcomes = await ref
        except asyncio.CancelledError:
            # The loop is closing, and so are its callers. Their tickets are unknown here: a granted
            # one is freed when its lease runs out, a waiting one when it is granted and runs out.
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # the actor failed the whole call: every caller in it gets the error
            for future in futures:
                if not future.done():
                    future.set_exception(unwrap(exc) or exc)
            return
        for future, (kind, value) in zip(futures, outcomes, strict=True):
            if not future.done():
                future.set_result((kind, value))
            elif kind != "error":  # its caller left before the answer came: give the ticket back
                self.actor.cancel.remote(value)

    @asynccontextmanager
    async def admitted(
        self,
        service: str,
        tenant: str,
        cost: float,
        priority: str = "default",
        wait: bool = True,
        max_wait_s: float | None = None,
        ticket: int | None = None,
    ) -> AsyncIterator[Admission]:
        """Hold a grant for the block; it is released when the block ends, whatever happens in it.

        `ticket`: a grant the caller already obtained with `grant` for this call; the block holds
        and releases it instead of asking for another.
        """
        if ticket is None:
            ticket = await self.grant(service, tenant, cost, priority, wait, max_wait_s)
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
            await asyncio.sleep(renewal_interval(self.lease_s))
            self.actor.renew.remote(ticket)

    async def call(self, method: str, *args: Any) -> Any:
        """An administrative call (`stats`, `set_tenant`, ...), with scheduler errors unwrapped."""
        try:
            return await getattr(self.actor, method).remote(*args)
        except RayTaskError as exc:
            error = unwrap(exc)
            if error is None:
                raise
            raise error from None
