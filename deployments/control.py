"""What admins change in the model deployments at run time, and what the replicas report back.

Both travel through the state store, so they reach every replica of a deployment and outlive
restarts:

- A service's **arrangement** (its backends' failover order and the disabled ones) is written by
  the admin API (`PUT /v1/admin/models/{service}`). Each replica reads it every `FOLLOW_S`, in a
  thread off its event loop (not on a model call's path: a slow or stalled Redis never holds a
  call), and says in its report which arrangement it applies; the admin API answers once every
  live replica does, so the next call after the PUT uses it on every replica, with no broadcast
  to miss one. A replica started later (autoscaling, a restart, a redeploy) starts with it.
- Each replica **reports** its failover health and arrangement every `REPORT_INTERVAL_S` when they
  changed, and every `HEARTBEAT_S` regardless; `GET /v1/admin/models` aggregates the fresh reports.

Serve's `user_config` would also reach every replica, but only through a redeploy of the
application: from inside the ingress that fights the owner of the deployment's config (a
`serve deploy` of the config file, or a RayService, would undo the change), and a restart from
the file would forget it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployments.failover import DISABLED_REASON, BackendChain, arranged
from deployments.types import ModelError
from state.store import StateStore

log = logging.getLogger(__name__)

ARRANGEMENTS = "model_arrangements"  # service -> {"backends": [...], "disabled": [...]}
REPORTS = "model_reports"  # "<service>/<replica>" -> {"replica", "at", "health": [...]}

FOLLOW_S = 0.25
REPORT_INTERVAL_S = 0.25
HEARTBEAT_S = 5.0
# A report older than this is a replica that is gone (killed, scaled down): not shown, and swept.
STALE_AFTER_S = 3 * HEARTBEAT_S

# Aggregating replicas, a backend has the worst status any replica reports.
STATUS_RANK = {"ready": 0, "failing": 1, "cooling_down": 2, "unavailable": 3}


class InvalidArrangement(ModelError):
    """An arrangement that names a backend the service does not have, or disables all of them."""

    code = "invalid_backends"
    status = 422
    retryable = False


@dataclass(frozen=True)
class Arrangement:
    """A service's backends in failover order, and the disabled ones."""

    backends: tuple[str, ...]
    disabled: frozenset[str] = frozenset()

    @classmethod
    def of(cls, configured: Sequence[str], backends: Sequence[str], disabled: Sequence[str]) -> Arrangement:
        """The arrangement an admin asks for, checked against the service's configured backends:
        `backends` first in that order (the others keep their configured order after them)."""
        details = [
            {
                "field": f"{field}.{index}",
                "reason": f"{name!r} is not a backend of this service; it has {list(configured)}",
            }
            for field, names in (("backends", backends), ("disabled", disabled))
            for index, name in enumerate(names)
            if name not in configured
        ]
        details += [
            {"field": f"backends.{index}", "reason": f"{name!r} is named twice"}
            for index, name in enumerate(backends)
            if name in backends[:index]
        ]
        if details:
            raise InvalidArrangement(f"unknown or repeated backends: {details[0]['reason']}", details)
        if set(configured) <= set(disabled):
            raise InvalidArrangement(
                "at least one backend must stay enabled", [{"field": "disabled", "reason": "names every backend"}]
            )
        return cls(tuple(arranged(configured, backends)), frozenset(disabled))

    def within(self, configured: Sequence[str]) -> Arrangement:
        """This arrangement for the backends the service has now (its config may have changed)."""
        return Arrangement(tuple(arranged(configured, self.backends)), self.disabled & frozenset(configured))

    def to_doc(self) -> dict[str, Any]:
        return {"backends": list(self.backends), "disabled": sorted(self.disabled)}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Arrangement:
        return cls(tuple(doc.get("backends", [])), frozenset(doc.get("disabled", [])))


def load_arrangement(store: StateStore, service: str) -> Arrangement | None:
    doc = store.get(ARRANGEMENTS, service)
    return Arrangement.from_doc(doc) if doc is not None else None


def save_arrangement(store: StateStore, service: str, arrangement: Arrangement) -> None:
    store.put(ARRANGEMENTS, service, arrangement.to_doc())


def fresh_reports(store: StateStore, service: str, now: float) -> list[dict[str, Any]]:
    """The reports of the service's live replicas, by replica."""
    return [doc for _, doc in store.items(REPORTS, f"{service}/") if now - doc["at"] < STALE_AFTER_S]


def replicas_apply(store: StateStore, service: str, arrangement: Arrangement, now: float) -> bool:
    """Whether every live replica of the service reports that it applies `arrangement`."""
    wanted = arrangement.to_doc()
    return all(report.get("arrangement") == wanted for report in fresh_reports(store, service, now))


def aggregate(
    configured: Sequence[str], arrangement: Arrangement | None, reports: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The service's backends in failover order, each with its status across the replicas.

    A backend's status is the worst that any replica reports (`unavailable` > `cooling_down` >
    `failing` > `ready`), with that replica's reason; calls and failures are summed; `replicas`
    has each replica's own view. Whether it is disabled comes from the stored arrangement, which
    every replica applies before its next call.
    """
    arrangement = arrangement or Arrangement(tuple(configured))
    backends = []
    for name in arranged(configured, arrangement.backends):
        views = [
            {"replica": report["replica"], **{k: entry[k] for k in ("model", "status", "reason", "calls", "failures")}}
            for report in reports
            for entry in report["health"]
            if entry["backend"] == name
        ]
        worst = max(views, key=lambda view: STATUS_RANK.get(view["status"], len(STATUS_RANK)), default=None)
        disabled = name in arrangement.disabled
        backends.append(
            {
                "name": name,
                "model": worst["model"] if worst else None,
                "status": worst["status"] if worst else "unavailable",
                "reason": DISABLED_REASON if disabled else worst["reason"] if worst else "no replica has reported",
                "disabled": disabled,
                "calls": sum(view["calls"] for view in views),
                "failures": sum(view["failures"] for view in views),
                "replicas": [{k: v for k, v in view.items() if k != "model"} for view in views],
            }
        )
    return backends


class ReplicaControl:
    """One replica's side: follow the stored arrangement, report the chain's health.

    The store failing never fails a model call: the replica keeps its last arrangement.
    """

    def __init__(self, store: StateStore, service: str, replica: str, chain: BackendChain) -> None:
        self.store = store
        self.service = service
        self.replica = replica
        self.chain = chain
        self.applied: Arrangement | None = None
        self.store_failing = False

    def follow(self) -> None:
        """Apply the service's stored arrangement if it changed since the last look."""
        self._apply(self._read())

    async def follow_forever(self) -> None:
        """Every `FOLLOW_S`: read the arrangement in a thread, apply it on the event loop (where
        the calls use the chain)."""
        while True:
            await asyncio.sleep(FOLLOW_S)
            self._apply(await asyncio.to_thread(self._read))

    def _read(self) -> Arrangement | None:
        """The stored arrangement; the applied one if the store cannot be read."""
        try:
            arrangement = load_arrangement(self.store, self.service)
        except Exception:  # any store client error: serve with the arrangement we have
            if not self.store_failing:
                log.warning(
                    "%s: cannot read the backends' arrangement; keeping the last one", self.service, exc_info=True
                )
            self.store_failing = True
            return self.applied
        self.store_failing = False
        return arrangement

    def _apply(self, arrangement: Arrangement | None) -> None:
        if arrangement is not None and arrangement != self.applied:
            self.chain.arrange(arrangement.backends, arrangement.disabled)
            self.applied = arrangement
            log.info(
                "%s: backends %s, disabled %s", self.service, list(arrangement.backends), sorted(arrangement.disabled)
            )

    async def report_forever(self) -> None:
        """Write this replica's health when it changes (checked every second) and every
        `HEARTBEAT_S`, so that readers can tell a live replica from a gone one; sweep gone ones."""
        last: tuple[list[dict[str, Any]], dict[str, Any] | None] | None = None
        last_at = 0.0
        while True:
            state = (self.chain.health(), self.applied.to_doc() if self.applied is not None else None)
            now = time.time()
            if state != last or now - last_at >= HEARTBEAT_S:
                try:
                    await asyncio.to_thread(self._report, *state, now)
                except Exception:  # the next round tries again
                    log.warning("%s: cannot report the backends' health", self.service, exc_info=True)
                else:
                    last, last_at = state, now
            await asyncio.sleep(REPORT_INTERVAL_S)

    def _report(self, health: list[dict[str, Any]], arrangement: dict[str, Any] | None, now: float) -> None:
        report = {"replica": self.replica, "at": now, "health": health, "arrangement": arrangement}
        self.store.put(REPORTS, f"{self.service}/{self.replica}", report)
        for key, doc in self.store.items(REPORTS, f"{self.service}/"):
            if now - doc["at"] >= STALE_AFTER_S:
                self.store.delete(REPORTS, key)
