"""What a model call uses, read from its request (the estimate) and its result (the actual), as its
modality says, and what it is charged: the scheduler's actual cost and the tenants' usage statistics.

The bridge between the modalities and the scheduler's cost models; the ingress and the workflow
executor both meter calls through it (`Meter`), so an interactive call and a workflow node of the
same size cost the same, and both are counted in the usage statistics the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import modalities
from common.errors import PlatformError, unwrap
from scheduler.client import Admission, SchedulerClient
from scheduler.costs import CostModels, Usage
from state.store import StateStore

log = logging.getLogger(__name__)

USAGE = "usage"  # the state store's namespace: one document per `<tenant>/<day>/<service>`
COUNTERS = ("requests", "errors", "refused", "dropped", "cost", "tokens_in", "tokens_out", "audio_seconds", "images")
# The statuses of a refusal at admission: over the tenant's quota, or the service overloaded.
REFUSALS = (429, 503)
# A failed write of the statistics (the store restarting) is tried again after this long.
RETRY_S = 1.0


def requested_usage(service: str, request: Any) -> Usage:
    """The usage a request asks for, before it runs."""
    return modalities.get(service).requested_usage(request)


def used(service: str, request: Any, result: Any) -> Usage:
    """The usage a call really had, from what the backend reported."""
    return modalities.get(service).used(request, result)


# ---------------------------------------------------------------- charging and usage statistics


class Outcome(str, Enum):
    """How a metered call ended, as the usage statistics count it."""

    SERVED = "served"
    FAILED = "failed"  # the model or the platform failed: counted as an error, charged the estimate
    REFUSED = "refused"  # over quota or overloaded at admission, or the client's bad input: not charged
    DROPPED = "dropped"  # the caller left (a client that closed its stream): charged what was generated


@dataclass
class MeteredCall:
    """A model call under a grant; `Meter.charge` records what it used once it has answered."""

    admission: Admission
    usage: Usage | None = None  # None until charged: the call failed or was cut short


class Meter:
    """Holds the grant of every model call and charges it: one path for the ingress and the executor.

    When the call ends, its tenant's usage statistics count it with the cost the scheduler is
    charged: the actual cost when the call was charged, else the estimate for a failure, and
    nothing for a call refused for the client's own input. A refusal at admission (429, 503) is
    counted as such, never as a request served.
    """

    def __init__(self, scheduler: SchedulerClient, costs: CostModels, ledger: UsageLedger) -> None:
        self.scheduler = scheduler
        self.costs = costs
        self.ledger = ledger

    def estimate(self, service: str, request: Any) -> float:
        """The cost charged at admission, from what the request asks for."""
        return self.costs.estimate(service, requested_usage(service, request))

    @asynccontextmanager
    async def admitted(
        self,
        service: str,
        tenant: str,
        estimate: float,
        priority: str = "default",
        wait: bool = True,
        max_wait_s: float | None = None,
        ticket: int | None = None,
    ) -> AsyncIterator[MeteredCall]:
        """The scheduler's grant for the block (see `SchedulerClient.admitted`), counted when it ends."""
        if ticket is None:
            try:
                ticket = await self.scheduler.grant(service, tenant, estimate, priority, wait, max_wait_s)
            except PlatformError as exc:
                if exc.status in REFUSALS:
                    self.ledger.record(tenant, service, None, 0.0, Outcome.REFUSED)
                raise
        async with self.scheduler.admitted(service, tenant, estimate, priority, ticket=ticket) as admission:
            call = MeteredCall(admission)
            outcome = Outcome.SERVED
            try:
                yield call
            except (asyncio.CancelledError, GeneratorExit):
                outcome = Outcome.DROPPED
                raise
            except Exception as exc:
                error = unwrap(exc)
                outcome = Outcome.REFUSED if error is not None and 400 <= error.status < 500 else Outcome.FAILED
                raise
            finally:
                # Before the grant's release, with the cost the release charges.
                if outcome is Outcome.REFUSED:
                    admission.actual_cost = 0.0
                cost = admission.actual_cost if admission.actual_cost is not None else admission.estimate
                self.ledger.record(tenant, service, call.usage, cost, outcome)

    def charge(self, call: MeteredCall, usage: Usage) -> None:
        """What the call used: its grant is released with the cost of `usage`."""
        call.usage = usage
        call.admission.actual_cost = self.costs.actual(call.admission.service, usage)


def usage_key(tenant: str, day: str, service: str) -> str:
    # Tenant ids have no "/" (serve_app/auth.py), so a tenant's documents share the prefix "<tenant>/".
    return f"{tenant}/{day}/{service}"


class UsageLedger:
    """Per day (UTC), tenant and service: requests (admitted calls), errors, refusals (at admission,
    or for the client's own bad input), dropped calls, cost, tokens in and out, audio seconds and
    images, kept in the state store.

    `record` only adds to counters in memory; one task per process writes them with the store's
    atomic increment, so a burst of calls costs a few writes and no call waits for one. A process
    that dies loses at most the counts of its last moments; a failed write is tried again.
    """

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: dict[str, dict[str, float]] = {}
        self._writer: asyncio.Task[None] | None = None

    def record(self, tenant: str, service: str, usage: Usage | None, cost: float, outcome: Outcome) -> None:
        """Count one model call; `usage` None for a call that never said what it used."""
        day = datetime.fromtimestamp(self.clock(), timezone.utc).date().isoformat()
        used = usage or Usage()
        refused = outcome is Outcome.REFUSED
        amounts = {
            "requests": int(not refused),
            "errors": int(outcome is Outcome.FAILED),
            "refused": int(refused),
            "dropped": int(outcome is Outcome.DROPPED),
            "cost": cost,
            "tokens_in": used.prompt_tokens or 0,
            "tokens_out": used.output_tokens or 0,
            "audio_seconds": used.audio_seconds,
            "images": used.images,
        }
        self._add(usage_key(tenant, day, service), amounts)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    def _add(self, key: str, amounts: dict[str, float]) -> None:
        pending = self._pending.setdefault(key, dict.fromkeys(COUNTERS, 0))
        for name, amount in amounts.items():
            pending[name] += amount

    async def _write(self) -> None:
        """Until nothing is pending: what has come since the last write, one increment a document."""
        while self._pending:
            batch, self._pending = self._pending, {}
            for key, amounts in batch.items():
                try:
                    await asyncio.to_thread(self.store.increment, USAGE, key, amounts)
                except Exception:
                    log.warning("could not write the usage statistics; trying again", exc_info=True)
                    self._add(key, amounts)
                    await asyncio.sleep(RETRY_S)

    async def flush(self) -> None:
        """Wait until everything recorded so far is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)


def read_usage(
    store: StateStore, days: int, tenant: str | None = None, service: str | None = None, today: date | None = None
) -> list[dict[str, Any]]:
    """The usage of the last `days` days (today included), oldest first, by tenant and service."""
    first = ((today or datetime.now(timezone.utc).date()) - timedelta(days=days - 1)).isoformat()
    items = []
    for key, counters in store.items(USAGE, f"{tenant}/" if tenant else ""):
        owner, day, name = key.split("/")
        if day >= first and (service is None or name == service):
            items.append({"day": day, "tenant": owner, "service": name, **dict.fromkeys(COUNTERS, 0), **counters})
    return sorted(items, key=lambda item: (item["day"], item["tenant"], item["service"]))
