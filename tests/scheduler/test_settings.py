from __future__ import annotations

import pickle
from typing import Any

import pytest

from scheduler.errors import InvalidSettings, QuotaExceeded, ServiceOverloaded, UnknownService
from scheduler.settings import (
    DEFAULT_LEASE_S,
    Priority,
    SchedulerConfig,
    ServiceLimits,
    TenantRecord,
    TenantSettings,
    renewal_interval,
)


def test_tenant_defaults() -> None:
    assert TenantSettings().to_dict() == {
        "weight": 1.0,
        "max_concurrency": 8,
        "rate_per_s": 20.0,
        "burst": 40.0,
        "max_queued": 1000,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"weight": 0},
        {"weight": -1.0},
        {"weight": float("inf")},
        {"weight": float("nan")},
        {"max_concurrency": -1},
        {"max_concurrency": 1.5},
        {"max_concurrency": True},
        {"rate_per_s": -0.1},
        {"burst": -1},
        {"max_queued": -1},
        {"max_queued": "10"},
    ],
)
def test_out_of_range_tenant_settings_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidSettings) as info:
        TenantSettings().merged(changes)
    assert info.value.status == 422
    assert info.value.details[0]["field"] == next(iter(changes))


def test_zero_counts_and_rates_are_allowed() -> None:
    settings = TenantSettings(max_concurrency=0, rate_per_s=0.0, burst=0.0, max_queued=0)
    assert settings.max_concurrency == 0


def test_merged_applies_a_subset_and_refuses_unknown_fields() -> None:
    base = TenantSettings(weight=2.0)
    assert base.merged({"burst": 5}) == TenantSettings(weight=2.0, burst=5)
    with pytest.raises(InvalidSettings) as info:
        base.merged({"wieght": 3})
    assert info.value.details == [{"field": "wieght", "reason": "unknown"}]


def test_from_dict_round_trips() -> None:
    settings = TenantSettings(weight=3.0, max_queued=5)
    assert TenantSettings.from_dict(settings.to_dict()) == settings
    assert TenantSettings.from_dict({}) == TenantSettings()


def test_tenant_record_has_the_admin_api_shape() -> None:
    record = TenantRecord("acme", TenantSettings(), configured=False)
    assert record.to_dict() == {"tenant": "acme", "configured": False, **TenantSettings().to_dict()}


def test_service_limits_validation() -> None:
    assert ServiceLimits(4).rate_per_s is None
    bad: list[dict[str, Any]] = [{"dispatch_limit": -1}, {"dispatch_limit": 1, "rate_per_s": -1.0}]
    bad += [{"dispatch_limit": 1, "burst": -1}, {"dispatch_limit": 1, "max_queued": -1}]
    for limits in bad:
        with pytest.raises(InvalidSettings):
            ServiceLimits(**limits)


def test_priority_ranks_and_values() -> None:
    assert [p.value for p in sorted(Priority, key=lambda p: p.rank)] == ["critical", "default", "low"]
    assert Priority("low") is Priority.LOW
    with pytest.raises(ValueError):
        Priority("urgent")


def test_errors_keep_their_fields_across_pickling() -> None:
    # The actor raises these in another process: Ray pickles them on the way back.
    quota = pickle.loads(pickle.dumps(QuotaExceeded("over", 2.5, [{"field": "max_queued"}])))
    assert (quota.code, quota.status, quota.retry_after_s, quota.details) == (
        "quota_exceeded",
        429,
        2.5,
        [{"field": "max_queued"}],
    )
    overloaded = pickle.loads(pickle.dumps(ServiceOverloaded("busy", 1.0)))
    assert (overloaded.code, overloaded.status, overloaded.retry_after_s) == ("service_overloaded", 503, 1.0)
    unknown = pickle.loads(pickle.dumps(UnknownService("nope")))
    assert (unknown.code, unknown.message) == ("unknown_service", "nope")


def test_scheduler_config_is_frozen_typed_and_checked() -> None:
    config = SchedulerConfig({"llm": ServiceLimits(2)})
    assert (config.lease_s, config.tenant_defaults) == (DEFAULT_LEASE_S, TenantSettings())
    assert pickle.loads(pickle.dumps(config)) == config  # it travels to the actor as it is
    for bad in ({"lease_s": 0}, {"lease_s": float("inf")}, {"snapshot_interval_s": -1.0}):
        with pytest.raises(InvalidSettings):
            SchedulerConfig({}, **bad)


def test_grants_are_renewed_well_inside_their_lease() -> None:
    """A holder renews a few times per lease, so that one late renewal costs no grant."""
    for lease_s in (1.0, DEFAULT_LEASE_S, 600.0):
        assert 0 < renewal_interval(lease_s) <= lease_s / 2
