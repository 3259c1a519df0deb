"""What the scheduler is configured with: tenant settings, service limits, priorities, and the
actor's whole config (`SchedulerConfig`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from scheduler.errors import InvalidSettings


class Priority(str, Enum):
    """Orders a tenant's own waiting requests; it never moves one tenant ahead of another."""

    CRITICAL = "critical"
    DEFAULT = "default"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the most urgent; lower ranks are served first within a tenant."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.DEFAULT: 1, Priority.LOW: 2}


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSettings(f"{name} must be an integer >= 0", [{"field": name, "reason": f"got {value!r}"}])


def _check_number(name: str, value: object, *, positive: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise InvalidSettings(f"{name} must be a finite number {bound}", [{"field": name, "reason": f"got {value!r}"}])


@dataclass(frozen=True)
class TenantSettings:
    """A tenant's share and quotas; the quotas span all services (one tenant, one budget).

    - `weight`: its share of each service it is backlogged on, relative to the other tenants there.
    - `max_concurrency`: granted requests at once, all services together; 0 suspends the tenant.
    - `rate_per_s`, `burst`: a token bucket over grants (one token per request). A request needs a
      whole token, so a bucket always holds at least one even when `burst` is below 1.
    - `max_queued`: waiting requests, all services together; past it a submission is refused with
      `QuotaExceeded` (so 0 refuses everything).
    """

    weight: float = 1.0
    max_concurrency: int = 8
    rate_per_s: float = 20.0
    burst: float = 40.0
    max_queued: int = 1000

    def __post_init__(self) -> None:
        _check_number("weight", self.weight, positive=True)
        _check_count("max_concurrency", self.max_concurrency)
        _check_number("rate_per_s", self.rate_per_s)
        _check_number("burst", self.burst)
        _check_count("max_queued", self.max_queued)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TenantSettings:
        """Build from a mapping of field names; missing fields take the defaults."""
        return cls().merged(data)

    def merged(self, changes: Mapping[str, Any]) -> TenantSettings:
        """These settings with `changes` (any subset of the fields) applied, as the admin PUT does."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise InvalidSettings("unknown tenant setting", [{"field": name, "reason": "unknown"} for name in unknown])
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TenantRecord:
    """A tenant's effective settings, and whether an admin set them (else they are the defaults)."""

    tenant: str
    settings: TenantSettings
    configured: bool

    def to_dict(self) -> dict[str, Any]:
        """The admin API's shape: `{"tenant", "configured", ...settings}`."""
        return {"tenant": self.tenant, "configured": self.configured, **self.settings.to_dict()}


@dataclass(frozen=True)
class ServiceLimits:
    """What one service can take, whoever asks.

    - `dispatch_limit`: granted requests at once (replicas × `max_ongoing_requests`).
    - `rate_per_s`, `burst`: a token bucket over grants, for providers with a request quota;
      None means no rate limit.
    - `max_queued`: waiting requests over all tenants, past which a submission is refused with
      `ServiceOverloaded`; None means only the tenants' own `max_queued` apply.
    """

    dispatch_limit: int
    rate_per_s: float | None = None
    burst: float = 1.0
    max_queued: int | None = None

    def __post_init__(self) -> None:
        _check_count("dispatch_limit", self.dispatch_limit)
        if self.rate_per_s is not None:
            _check_number("rate_per_s", self.rate_per_s)
        _check_number("burst", self.burst)
        if self.max_queued is not None:
            _check_count("max_queued", self.max_queued)


# A grant not renewed for this long is released by the actor (its holder died); holders renew it
# `RENEWALS_PER_LEASE` times per lease, so one late renewal costs no grant.
DEFAULT_LEASE_S = 30.0
RENEWALS_PER_LEASE = 3
DEFAULT_SNAPSHOT_INTERVAL_S = 1.0


def renewal_interval(lease_s: float) -> float:
    """How often a holder renews a grant whose lease is `lease_s`."""
    return lease_s / RENEWALS_PER_LEASE


@dataclass(frozen=True)
class SchedulerConfig:
    """What the scheduler actor runs with; a redeploy hands the running actor a new one
    (`SchedulerActor.reconfigure`).

    - `services`: each service's limits. `dispatch_limit` is where a service starts: from then on it
      follows the deployment's running replicas (serve_app/capacity.py).
    - `tenant_defaults`: the settings of every tenant no admin has configured.
    - `lease_s`: see `DEFAULT_LEASE_S`. `snapshot_interval_s`: how often virtual times are stored.
    """

    services: Mapping[str, ServiceLimits]
    tenant_defaults: TenantSettings = field(default_factory=TenantSettings)
    lease_s: float = DEFAULT_LEASE_S
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S

    def __post_init__(self) -> None:
        _check_number("lease_s", self.lease_s, positive=True)
        _check_number("snapshot_interval_s", self.snapshot_interval_s, positive=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, for the state store (`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SchedulerConfig:
        return cls(
            services={name: ServiceLimits(**limits) for name, limits in data["services"].items()},
            tenant_defaults=TenantSettings.from_dict(data["tenant_defaults"]),
            lease_s=data["lease_s"],
            snapshot_interval_s=data["snapshot_interval_s"],
        )
