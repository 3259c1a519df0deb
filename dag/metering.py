"""What a model call uses, read from its request (the estimate) and its result (the actual), and
what it is charged: the scheduler's actual cost and the tenants' usage statistics.

The bridge between the modality types and the scheduler's cost models; the ingress and the
workflow executor both meter calls through it (`Meter`), so an interactive call and a workflow
node of the same size cost the same, and both are counted in the usage statistics the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from deployments import media
from deployments.types import (
    CaptionRequest,
    EmbedRequest,
    EmbedResult,
    ImageRequest,
    ImageResult,
    InvalidInput,
    LLMRequest,
    LLMResult,
    SpeechRequest,
    SpeechResult,
    TranscribeRequest,
    TranscribeResult,
)
from scheduler.client import Admission, SchedulerClient
from scheduler.costs import CostModels, Usage
from state.store import StateStore

log = logging.getLogger(__name__)

USAGE = "usage"  # the state store's namespace: one document per `<tenant>/<day>/<service>`
COUNTERS = ("requests", "errors", "cost", "tokens_in", "tokens_out", "audio_seconds", "images")
# A failed write of the statistics (the store restarting) is tried again after this long.
RETRY_S = 1.0


def requested_usage(request: Any) -> Usage:
    """The usage a request asks for, before it runs."""
    if isinstance(request, LLMRequest):
        texts = [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]
        return Usage(characters=sum(len(t) for t in texts), output_tokens=request.max_tokens)
    if isinstance(request, TranscribeRequest):
        try:
            seconds = media.wav_info(request.audio).seconds
        except InvalidInput:
            seconds = 0.0  # the replica refuses it; charge the minimum
        return Usage(audio_seconds=seconds)
    if isinstance(request, SpeechRequest):
        return Usage(characters=len(request.text))
    if isinstance(request, CaptionRequest):
        return Usage(images=len(request.images))
    if isinstance(request, ImageRequest):
        return Usage(images=request.n, steps=request.steps, megapixels=request.n * request.width * request.height / 1e6)
    if isinstance(request, EmbedRequest):
        return Usage(characters=sum(len(t) for t in request.texts), output_tokens=0)
    raise TypeError(f"no usage for {type(request).__name__}")


def used(request: Any, result: Any) -> Usage:
    """The usage a call really had, from what the backend reported."""
    if isinstance(result, LLMResult):
        return Usage(prompt_tokens=result.prompt_tokens, output_tokens=result.completion_tokens)
    if isinstance(result, TranscribeResult):
        return Usage(audio_seconds=result.audio_seconds)
    if isinstance(result, SpeechResult):
        return Usage(characters=len(request.text), audio_seconds=result.audio_seconds)
    if isinstance(result, EmbedResult):
        return Usage(prompt_tokens=result.prompt_tokens, output_tokens=0)
    if isinstance(result, ImageResult):
        count = len(result.images)
        return Usage(images=count, steps=result.steps, megapixels=count * result.width * result.height / 1e6)
    return requested_usage(request)


# ---------------------------------------------------------------- charging and usage statistics


@dataclass
class MeteredCall:
    """A model call under a grant; `Meter.charge` records what it used once it has answered."""

    admission: Admission
    usage: Usage | None = None  # None until charged: the call failed or was cut short


class Meter:
    """Holds the grant of every model call and charges it: one path for the ingress and the executor.

    When the call ends, its tenant's usage statistics count it (a failure as an error) with the
    cost the scheduler is charged: the actual cost when the call was charged, else the estimate.
    """

    def __init__(self, scheduler: SchedulerClient, costs: CostModels, ledger: UsageLedger) -> None:
        self.scheduler = scheduler
        self.costs = costs
        self.ledger = ledger

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
        async with self.scheduler.admitted(service, tenant, estimate, priority, wait, max_wait_s, ticket) as admission:
            call = MeteredCall(admission)
            failed = False
            try:
                yield call
            except Exception:
                failed = True  # a cancelled caller (CancelledError) is not the model's error
                raise
            finally:
                # Before the grant's release, with the cost the release charges.
                cost = admission.actual_cost if admission.actual_cost is not None else admission.estimate
                self.ledger.record(tenant, service, call.usage, cost, failed)

    def charge(self, call: MeteredCall, usage: Usage) -> None:
        """What the call used: its grant is released with the cost of `usage`."""
        call.usage = usage
        call.admission.actual_cost = self.costs.actual(call.admission.service, usage)


def usage_key(tenant: str, day: str, service: str) -> str:
    # Tenant ids have no "/" (serve_app/auth.py), so a tenant's documents share the prefix "<tenant>/".
    return f"{tenant}/{day}/{service}"


class UsageLedger:
    """Per day (UTC), tenant and service: requests, errors, cost, tokens in and out, audio seconds
    and images, kept in the state store.

    `record` only adds to counters in memory; one task per process writes them with the store's
    atomic increment, so a burst of calls costs a few writes and no call waits for one. A process
    that dies loses at most the counts of its last moments; a failed write is tried again.
    """

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: dict[str, dict[str, float]] = {}
        self._writer: asyncio.Task[None] | None = None

    def record(self, tenant: str, service: str, usage: Usage | None, cost: float, failed: bool) -> None:
        """Count one model call; `usage` None for a call that never said what it used."""
        day = datetime.fromtimestamp(self.clock(), timezone.utc).date().isoformat()
        used = usage or Usage()
        amounts = {
            "requests": 1,
            "errors": int(failed),
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
