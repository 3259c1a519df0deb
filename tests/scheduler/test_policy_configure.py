"""`FairScheduler.configure`: a redeploy's tenant defaults and service limits, applied to a running
scheduler without losing its queues, grants, virtual times or admin-set tenants."""

from __future__ import annotations

import pytest

from scheduler.errors import ServiceOverloaded
from scheduler.policy import FairScheduler
from scheduler.settings import ServiceLimits, TenantSettings

OPEN = TenantSettings(max_concurrency=100, rate_per_s=1e9, burst=1e9, max_queued=100)


def test_default_tenants_take_the_new_defaults_and_configured_ones_keep_theirs() -> None:
    policy = FairScheduler({"llm": ServiceLimits(10)}, OPEN)
    policy.set_tenant("vip", TenantSettings(weight=5.0))
    policy.submit("llm", "acme", 4.0, now=0.0)
    (grant,) = policy.dispatch(0.0)
    policy.release(grant.ticket)
    vt = policy.stats()["services"]["llm"]["tenants"]["acme"]["vt"]

    new_defaults = TenantSettings(weight=2.0, max_concurrency=1)
    policy.configure({"llm": ServiceLimits(10)}, new_defaults)

    assert policy.tenant("acme").settings == new_defaults and not policy.tenant("acme").configured
    assert policy.tenant("never-seen").settings == new_defaults
    assert policy.tenant("vip").settings == TenantSettings(weight=5.0)
    assert policy.stats()["services"]["llm"]["tenants"]["acme"]["vt"] == pytest.approx(vt)


def test_looser_defaults_let_a_tenant_at_its_limit_through_at_once() -> None:
    policy = FairScheduler({"llm": ServiceLimits(10)}, TenantSettings(max_concurrency=1))
    for _ in range(2):
        policy.submit("llm", "acme", 1.0, now=0.0)
    assert len(policy.dispatch(0.0)) == 1  # the second waits: the tenant is at its own limit
    policy.configure({"llm": ServiceLimits(10)}, TenantSettings(max_concurrency=2))
    assert len(policy.dispatch(0.0)) == 1


def test_services_take_new_limits_but_keep_their_dispatch_limit() -> None:
    policy = FairScheduler({"llm": ServiceLimits(1), "tts": ServiceLimits(1, rate_per_s=1.0)}, OPEN)
    assert policy.set_dispatch_limit("llm", 6)  # followed the replicas
    policy.configure(
        {
            "llm": ServiceLimits(1, rate_per_s=0.0, burst=1.0, max_queued=1),
            "tts": ServiceLimits(1),  # its rate limit lifted
            "embed": ServiceLimits(3),  # a new service
        },
        OPEN,
    )
    services = policy.stats()["services"]
    assert services["llm"]["dispatch_limit"] == 6 and services["embed"]["dispatch_limit"] == 3
    # llm: a rate of 0 lets the bucket's one token through, then nothing; one may queue, not two.
    policy.submit("llm", "a", 1.0, now=0.0)
    assert len(policy.dispatch(0.0)) == 1
    policy.submit("llm", "a", 1.0, now=0.0)
    assert policy.dispatch(0.0) == []
    with pytest.raises(ServiceOverloaded):
        policy.submit("llm", "b", 1.0, now=0.0)
    # tts: no rate limit any more, so its one slot is the only bound.
    for _ in range(3):
        ticket = policy.submit("tts", "a", 1.0, now=0.0)
        assert [g.ticket for g in policy.dispatch(0.0)] == [ticket]
        policy.release(ticket)
