"""The scheduler actor on the session's Ray cluster: grants across processes, cancellation,
a holder that dies, and a restart that keeps tenant settings and virtual times."""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from scheduler.actor import SchedulerActor
from scheduler.client import SchedulerClient, scheduler_actor
from scheduler.errors import QuotaExceeded, ServiceOverloaded
from scheduler.settings import SchedulerConfig, ServiceLimits, TenantSettings
from state.store import SqliteStore
from tests.helpers import reported_methods, wait_restarted, wait_until

pytestmark = pytest.mark.ray


def make_config(dispatch_limit: int = 1, lease_s: float = 60.0, **changes: Any) -> SchedulerConfig:
    services = {"tts": ServiceLimits(dispatch_limit), "llm": ServiceLimits(4)}
    return SchedulerConfig(services, lease_s=lease_s, snapshot_interval_s=0.2, **changes)


def make_actor(db: Path | None = None, dispatch_limit: int = 1, lease_s: float = 60.0) -> Any:
    """A private scheduler actor; with `db`, it opens its state store there (as the platform's opens its own)."""
    open_store = functools.partial(SqliteStore, db) if db is not None else None
    return (
        ray.remote(SchedulerActor)
        .options(max_restarts=-1, max_task_retries=-1, max_concurrency=1000)
        .remote(make_config(dispatch_limit, lease_s), open_store)
    )


@ray.remote(num_cpus=0)
def hold_grant(actor: Any, tenant: str, hold_s: float) -> tuple[float, float]:
    """In another process: take a grant, hold it, release it; when it started and ended."""

    async def run() -> tuple[float, float]:
        client = SchedulerClient(actor)
        async with client.admitted("tts", tenant, 1.0):
            started = time.time()
            await asyncio.sleep(hold_s)
        return started, time.time()

    return asyncio.run(run())


@ray.remote(num_cpus=0, max_retries=0)
def grant_then_die(actor: Any) -> None:
    asyncio.run(SchedulerClient(actor).grant("tts", "doomed", 1.0))
    os._exit(1)


def stats(actor: Any, service: str = "tts") -> dict[str, Any]:
    return ray.get(actor.stats.remote())["services"][service]


def test_grants_across_processes_respect_the_dispatch_limit(ray_cluster: None) -> None:
    actor = make_actor(dispatch_limit=1)
    spans = ray.get([hold_grant.remote(actor, f"t{i}", 0.5) for i in range(3)])
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.05  # one at a time: each starts after the previous released
    wait_until(lambda: stats(actor)["in_flight"] == 0)  # the last release is fire-and-forget


def test_waiting_grant_can_be_cancelled(ray_cluster: None) -> None:
    actor = make_actor(dispatch_limit=1)
    first = ray.get(actor.grant.remote("tts", "a", 1.0))
    waiting = actor.grant.remote("tts", "b", 1.0)
    wait_until(lambda: stats(actor)["queued"] == 1)
    ray.cancel(waiting)
    wait_until(lambda: stats(actor)["queued"] == 0)
    assert ray.get(actor.release.remote(first, 1.0)) is True
    assert stats(actor)["in_flight"] == 0


def test_holder_that_dies_does_not_leak_its_grant(ray_cluster: None) -> None:
    actor = make_actor(dispatch_limit=1, lease_s=1.0)
    with pytest.raises(ray.exceptions.RayError):
        ray.get(grant_then_die.remote(actor))
    # The one slot is free again only once the dead holder's lease expires; the timeout bounds a hang.
    ticket = ray.get(actor.grant.remote("tts", "next", 1.0), timeout=20)
    assert ticket > 0
    state = stats(actor)
    assert state["in_flight"] == 1 and state["tenants"].get("doomed", {}).get("in_flight", 0) == 0


def test_interactive_call_over_quota_is_refused_at_once(ray_cluster: None) -> None:
    actor = make_actor(dispatch_limit=4)
    ray.get(actor.set_tenant.remote("burst", {"rate_per_s": 0.01, "burst": 1}))
    ray.get(actor.grant.remote("llm", "burst", 1.0, "default", False))
    with pytest.raises(QuotaExceeded) as caught:
        asyncio.run(SchedulerClient(actor).grant("llm", "burst", 1.0, wait=False))
    assert caught.value.retry_after_s >= 1


def test_restart_restores_settings_and_virtual_time(ray_cluster: None, tmp_path: Path) -> None:
    actor = make_actor(tmp_path / "state.sqlite3", dispatch_limit=4)
    ray.get(actor.set_tenant.remote("acme", {"weight": 3.0}))
    for _ in range(3):
        ticket = ray.get(actor.grant.remote("llm", "acme", 6.0))
        ray.get(actor.release.remote(ticket, 6.0))
    vt_before = stats(actor, "llm")["tenants"]["acme"]["vt"]
    assert vt_before == pytest.approx(6.0)  # 3 requests × 6 / weight 3
    time.sleep(0.6)  # a snapshot is taken every 0.2 s
    ray.kill(actor, no_restart=False)
    wait_until(lambda: _answers(actor))
    assert ray.get(actor.tenant.remote("acme"))["weight"] == 3.0
    assert stats(actor, "llm")["tenants"]["acme"]["vt"] == pytest.approx(vt_before)


def _answers(actor: Any) -> bool:
    try:
        return ray.get(actor.ping.remote(), timeout=2) == "pong"
    except ray.exceptions.RayError:
        return False


def test_one_batch_answers_each_request_on_its_own(ray_cluster: None) -> None:
    """Releases, then requests, in one call: granted, waiting, or refused, each for its own caller."""
    actor = make_actor(dispatch_limit=1)
    held = ray.get(actor.grant.remote("tts", "a", 1.0))
    outcomes = ray.get(
        actor.submit_many.remote(
            [(held, 1.0)],  # frees the one slot for the first request below
            [
                ("tts", "b", 1.0, "default", True, None),
                ("tts", "c", 1.0, "default", True, None),
                ("nope", "c", 1.0, "default", True, None),
            ],
        )
    )
    (kind_b, ticket_b), (kind_c, ticket_c), (kind_bad, error) = outcomes
    assert (kind_b, kind_c, kind_bad) == ("granted", "waiting", "error")
    assert error.code == "unknown_service"
    waiting = actor.wait.remote(ticket_c)
    assert ray.get(actor.release.remote(ticket_b, 1.0)) is True
    assert ray.get(waiting, timeout=10) == ticket_c  # granted once b released its slot
    assert ray.get(actor.release.remote(ticket_c, 1.0)) is True
    assert stats(actor)["in_flight"] == 0


def test_client_batches_concurrent_callers_and_returns_every_slot(ray_cluster: None) -> None:
    """Many callers in one loop, more than the service's slots: all run, at most `limit` at once."""
    actor = make_actor(dispatch_limit=2)

    async def run() -> int:
        client = SchedulerClient(actor)
        running = peak = 0

        async def one(i: int) -> None:
            nonlocal running, peak
            async with client.admitted("tts", f"t{i % 3}", 1.0):
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= 1

        await asyncio.gather(*(one(i) for i in range(40)))
        return peak

    assert asyncio.run(run()) == 2
    wait_until(lambda: stats(actor)["in_flight"] == 0)
    assert sum(t["served_cost"] for t in stats(actor)["tenants"].values()) == pytest.approx(40.0)


def test_caller_that_leaves_while_waiting_gives_its_request_back(ray_cluster: None) -> None:
    actor = make_actor(dispatch_limit=1)
    held = ray.get(actor.grant.remote("tts", "a", 1.0))

    async def leave() -> None:
        client = SchedulerClient(actor)
        grant = asyncio.ensure_future(client.grant("tts", "b", 1.0))
        while (await actor.stats.remote())["services"]["tts"]["queued"] == 0:
            await asyncio.sleep(0.05)
        grant.cancel()  # the caller leaves while its request waits in the queue
        with pytest.raises(asyncio.CancelledError):
            await grant
        await asyncio.sleep(0.1)  # the withdrawal is sent; leave the loop open for it

    asyncio.run(leave())
    wait_until(lambda: stats(actor)["queued"] == 0)
    assert ray.get(actor.release.remote(held, 1.0)) is True
    assert stats(actor)["in_flight"] == 0


def test_waiting_caller_submits_again_after_a_restart(ray_cluster: None) -> None:
    """A restarted actor forgets the queue: a caller that was waiting submits again and is granted."""
    actor = make_actor(dispatch_limit=1)
    ray.get(actor.grant.remote("tts", "a", 1.0))  # the only slot, held by no one who will release it

    @ray.remote(num_cpus=0)
    def wait_for_grant(actor: Any) -> int:
        return asyncio.run(SchedulerClient(actor).grant("tts", "b", 1.0))

    waiter = wait_for_grant.remote(actor)
    wait_until(lambda: stats(actor)["queued"] == 1)
    ray.kill(actor, no_restart=False)  # the successor has no grants in flight: b's request goes first
    assert ray.get(waiter, timeout=30) > 0


def test_a_bounded_wait_is_refused_as_overloaded_and_withdrawn(ray_cluster: None) -> None:
    """An interactive caller waits its turn at most `max_wait_s`; then 503, and its request leaves."""
    actor = make_actor(dispatch_limit=1)
    held = ray.get(actor.grant.remote("tts", "a", 1.0))  # the service's one slot, busy

    async def run() -> ServiceOverloaded:
        client = SchedulerClient(actor)
        with pytest.raises(ServiceOverloaded) as caught:
            await client.grant("tts", "b", 1.0, wait=False, max_wait_s=1.0)
        # The withdrawal goes out from this loop: keep it open until the actor has it.
        while (await actor.stats.remote())["services"]["tts"]["queued"]:
            await asyncio.sleep(0.05)
        return caught.value

    error = asyncio.run(run())
    assert error.status == 503 and error.retry_after_s == 1.0
    assert ray.get(actor.release.remote(held, 1.0)) is True
    assert stats(actor)["in_flight"] == 0  # nothing was granted to the caller that left


def test_a_wait_that_would_be_too_long_is_refused_at_once(ray_cluster: None) -> None:
    """Once the actor knows how long the service's calls last, an interactive caller whose turn
    would come too late is told so at once, without waiting its `max_wait_s` out first."""
    actor = make_actor(dispatch_limit=1)
    ray.get(hold_grant.remote(actor, "a", 0.5))  # the pace: a call holds its grant 0.5 s
    held = ray.get(actor.grant.remote("tts", "a", 1.0))
    queued = [actor.grant.remote("tts", "a", 1.0) for _ in range(10)]  # about 5 s of calls waiting
    wait_until(lambda: stats(actor)["queued"] == 10)

    async def run() -> ServiceOverloaded:
        client = SchedulerClient(actor)
        with pytest.raises(ServiceOverloaded) as caught:
            await client.grant("tts", "a", 1.0, wait=False, max_wait_s=2.0)
        return caught.value

    error = asyncio.run(run())
    assert "its turn would come in about" in str(error)  # the estimate, not the timeout
    assert error.status == 503 and error.retry_after_s >= 1.0
    assert stats(actor)["queued"] == 10  # it never joined the queue
    ray.get(actor.release.remote(held, 1.0))
    for grant in queued:  # one slot: each is granted once the one before is released
        ray.get(actor.release.remote(ray.get(grant), 1.0))


def test_a_redeploy_reconfigures_the_running_actor_and_keeps_its_state(ray_cluster: None, tmp_path: Path) -> None:
    """The actor is detached: the getter hands an existing one the new config; tenants keep their
    state, and a restart (made with the first config) keeps the new one."""
    name = f"test-scheduler-{uuid.uuid4().hex[:8]}"
    open_store = functools.partial(SqliteStore, tmp_path / "state.sqlite3")
    actor = scheduler_actor(make_config(dispatch_limit=2, lease_s=60.0), open_store, name=name)
    try:
        ray.get(actor.set_tenant.remote("admin-set", {"weight": 3.0}))
        ticket = ray.get(actor.grant.remote("llm", "acme", 6.0))
        ray.get(actor.release.remote(ticket, 6.0))
        ray.get(actor.grant.remote("tts", "holder", 1.0))  # in flight across the redeploy
        vt = stats(actor, "llm")["tenants"]["acme"]["vt"]

        defaults = TenantSettings(max_concurrency=2, rate_per_s=5.0, burst=5.0)
        limits = {"tts": ServiceLimits(1, rate_per_s=2.0, burst=3.0, max_queued=7), "llm": ServiceLimits(1)}
        again = scheduler_actor(SchedulerConfig(limits, defaults, lease_s=12.0), open_store, name=name)

        # Sent without waiting (an async actor may run the next call first): it lands at once.
        wait_until(lambda: ray.get(again.config.remote()).lease_s == 12.0, timeout_s=10)
        config = ray.get(again.config.remote())
        assert (config.tenant_defaults, config.services["tts"].max_queued) == (defaults, 7)
        assert ray.get(again.tenant.remote("acme"))["max_concurrency"] == 2  # a default tenant: the new defaults
        assert ray.get(again.tenant.remote("admin-set"))["weight"] == 3.0  # an admin's settings stay
        assert stats(again, "llm")["tenants"]["acme"]["vt"] == pytest.approx(vt)  # and so does fairness state
        tts = stats(again)
        assert tts["in_flight"] == 1 and tts["dispatch_limit"] == 2  # follows the replicas, not the config

        wait_restarted(again)  # Ray makes the successor with the first config
        assert ray.get(again.config.remote()) == config
    finally:
        ray.kill(actor)


HOT_METHODS = ("grant", "submit_many", "wait", "cancel", "release", "renew", "release_many", "check_room")


def test_every_request_call_leaves_no_task_event(ray_cluster: None) -> None:
    """Each request's calls to the actor report no task events, which would grow the GCS under load;
    the actor's administrative calls still do, for the dashboard."""
    actor = make_actor(dispatch_limit=1)
    held = ray.get(actor.grant.remote("tts", "events", 1.0))
    [(kind, waiting)] = ray.get(actor.submit_many.remote([], [("tts", "events", 1.0, "default", True, None)]))
    assert kind == "waiting"
    ray.get(actor.cancel.remote(waiting))
    assert ray.get(actor.wait.remote(held)) == held  # already granted: answered at once
    assert ray.get(actor.renew.remote(held)) is True
    assert ray.get(actor.release.remote(held, 1.0)) is True
    ticket = ray.get(actor.grant.remote("tts", "events", 1.0))
    assert ray.get(actor.release_many.remote([(ticket, 1.0)])) == 1
    ray.get(actor.check_room.remote("events"))
    ray.get(actor.stats.remote())  # last: once its event is in, those of the calls before it are too

    wait_until(
        lambda: "stats" in reported_methods(actor), timeout_s=20, what="the stats call's task event", interval_s=0.5
    )
    assert not reported_methods(actor) & set(HOT_METHODS)


@ray.remote(num_cpus=0, max_restarts=1)
class Holder:
    """A restartable caller, as the workflow executor is: its client names it by its actor id."""

    def __init__(self, actor: Any) -> None:
        self.client = SchedulerClient(actor, holder=ray.get_runtime_context().get_actor_id())
        self.calls: list[asyncio.Task[int]] = []

    async def ask(self, count: int) -> None:
        """Ask for `count` grants and keep them (never released)."""
        self.calls += [asyncio.create_task(self.client.grant("tts", "restartable", 1.0)) for _ in range(count)]

    async def grant(self) -> int:
        return await self.client.grant("tts", "restartable", 1.0)


def test_a_restarted_holder_takes_over_the_grants_and_waits_of_its_previous_instance(ray_cluster: None) -> None:
    actor = make_actor(dispatch_limit=1, lease_s=60.0)  # a lease far longer than the test
    holder = Holder.remote(actor)
    ray.get(holder.ask.remote(4))
    wait_until(lambda: (stats(actor)["in_flight"], stats(actor)["queued"]) == (1, 3))
    wait_restarted(holder)  # its calls die with it; Ray starts it again, with the same id
    # The new instance's first request lets go of the old one's grant and its three waits.
    assert ray.get(holder.grant.remote(), timeout=20) > 0
    state = stats(actor)
    assert (state["in_flight"], state["queued"]) == (1, 0)
