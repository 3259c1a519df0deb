"""An ordered list of backends for one modality, with failover and cool-down.

A call goes to the first backend that is loaded and not cooling down. When it raises a retryable
error or times out, the next backend answers. A backend that fails `failure_threshold` times in a
row is skipped for `cooldown_s`; after that it gets one more chance. Errors that are the client's
(`InvalidInput`) are raised at once: another backend would refuse the same input.

A request may need capabilities (`request.needs()`: tools, a JSON schema, logprobs, images); a
backend that does not declare one of them is skipped for it, and when no usable backend has it the
request is the client's `InvalidInput`, naming the field that asked for it.

An admin may reorder the chain and disable backends at run time (`arrange`); a disabled backend is
skipped by every call from then on, and keeps its health so that `/v1/admin/models` still shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from deployments.config import DEFAULT_COOLDOWN_S, DEFAULT_FAILURE_THRESHOLD, DEFAULT_TIMEOUT_S
from deployments.types import (
    Backend,
    BackendInfo,
    BackendTimeout,
    InvalidInput,
    ModelError,
    ModelUnavailable,
)

log = logging.getLogger(__name__)

DISABLED_REASON = "disabled by an admin"


def arranged(configured: Sequence[str], order: Sequence[str]) -> list[str]:
    """The configured backend names, those named in `order` first and in that order, the others
    after them in their configured order."""
    chosen = [name for name in dict.fromkeys(order) if name in configured]
    return chosen + [name for name in configured if name not in chosen]


def capabilities_of(backend: Backend) -> frozenset[str]:
    return frozenset(getattr(backend, "capabilities", frozenset()))


def needs_of(request: Any) -> dict[str, str]:
    """The capabilities a request needs (capability -> the request field that needs it)."""
    needs = getattr(request, "needs", None)
    return dict(needs()) if callable(needs) else {}


def answered_by(answer: Any, backend: Backend) -> Any:
    """The answer (a result or a streamed chunk), naming the model that produced it where the
    backend did not: every answer says where the tenant's data went, after a failover too."""
    if getattr(answer, "model", None) == "":
        answer.model = backend.model
    return answer


def _whole(backend: Backend) -> Callable[[Any], AsyncIterator[Any]]:
    """A `stream` of one chunk: the backend's whole result."""

    async def stream(request: Any) -> AsyncIterator[Any]:
        yield await backend.run(request)

    return stream


@dataclass
class BackendState:
    backend: Backend
    loaded: bool = False
    load_error: str | None = None
    consecutive_failures: int = 0
    cooling_until: float = 0.0
    last_error: str | None = None
    calls: int = 0
    failures: int = 0
    disabled: bool = False  # by an admin; `status` stays the machinery's own view

    def status(self, now: float) -> str:
        if not self.loaded:
            return "unavailable"
        if now < self.cooling_until:
            return "cooling_down"
        if self.consecutive_failures:
            return "failing"
        return "ready"

    def reason(self) -> str | None:
        return DISABLED_REASON if self.disabled else self.load_error or self.last_error


class BackendChain:
    """Calls the backends of one modality in order, failing over on retryable errors."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ValueError("a modality needs at least one backend")
        self.states = [BackendState(b) for b in backends]
        self.configured = [s.backend.name for s in self.states]
        self.timeout_s = timeout_s
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock

    def load(self) -> None:
        """Load every backend; one that cannot load is kept, marked unavailable with its reason."""
        for state in self.states:
            try:
                state.backend.load()
            except Exception as exc:  # a backend's load may fail in any library-specific way
                state.load_error = str(exc) or type(exc).__name__
                log.warning("backend %s could not load: %s", state.backend.name, state.load_error)
            else:
                state.loaded = True

    def arrange(self, order: Sequence[str], disabled: Collection[str]) -> None:
        """Put the backends in an admin's `order` and disable those named in `disabled`; names the
        chain does not have are ignored (the config may have changed since the admin's choice)."""
        by_name = {s.backend.name: s for s in self.states}
        self.states = [by_name[name] for name in arranged(self.configured, order)]
        for state in self.states:
            state.disabled = state.backend.name in disabled

    # -------------------------------------------------------------- state

    def infos(self) -> list[BackendInfo]:
        now = self.clock()
        return [
            BackendInfo(
                name=s.backend.name,
                model=s.backend.model,
                ready=s.status(now) in ("ready", "failing") and not s.disabled,
                reason=s.reason(),
                voices=list(getattr(s.backend, "voices", [])),
                capabilities=sorted(capabilities_of(s.backend)),
            )
            for s in self.states
        ]

    def health(self) -> list[dict[str, Any]]:
        """The failover machinery's own view of each backend, for `/readyz` and admin."""
        now = self.clock()
        return [
            {
                "backend": s.backend.name,
                "model": s.backend.model,
                "status": s.status(now),
                "reason": s.reason(),
                "calls": s.calls,
                "failures": s.failures,
                "disabled": s.disabled,
            }
            for s in self.states
        ]

    def broken(self) -> bool:
        """Every backend that loaded is cooling down after repeated failures: a replica in this
        state is better replaced (an engine that crashed stays crashed)."""
        loaded = [s for s in self.states if s.loaded and not s.disabled]
        now = self.clock()
        return bool(loaded) and all(now < s.cooling_until for s in loaded)

    def ready(self) -> bool:
        return any(s.loaded and not s.disabled for s in self.states)

    def unavailable_reason(self) -> str:
        reasons = [f"{s.backend.name}: {s.reason() or s.status(self.clock())}" for s in self.states]
        return "no backend can serve this request (" + "; ".join(reasons) + ")"

    def _candidates(self, request: Any = None) -> list[BackendState]:
        """The backends to try for `request`, in order; an `InvalidInput` naming the field when no
        usable backend has a capability the request needs."""
        now = self.clock()
        usable = [s for s in self.states if s.loaded and not s.disabled]
        for capability, request_field in needs_of(request).items():
            able = [s for s in usable if capability in capabilities_of(s.backend)]
            if usable and not able:
                names = ", ".join(s.backend.name for s in usable)
                reason = f"no available backend ({names}) supports {capability}"
                raise InvalidInput(f"{request_field}: {reason}", [{"field": request_field, "reason": reason}])
            usable = able
        fresh = [s for s in usable if now >= s.cooling_until]
        # When every usable backend is cooling down, try them anyway rather than refuse outright.
        return fresh or usable

    def _succeeded(self, state: BackendState) -> None:
        state.calls += 1
        state.consecutive_failures = 0
        state.last_error = None

    def _failed(self, state: BackendState, error: BaseException) -> None:
        state.calls += 1
        state.failures += 1
        state.consecutive_failures += 1
        state.last_error = f"{type(error).__name__}: {error}"
        if state.consecutive_failures >= self.failure_threshold:
            state.cooling_until = self.clock() + self.cooldown_s
        log.warning("backend %s failed: %s", state.backend.name, state.last_error)

    # -------------------------------------------------------------- calls

    async def run(self, request: Any) -> Any:
        """The result of the first backend that answers."""
        last_error: BaseException | None = None
        for state in self._candidates(request):
            try:
                result = await asyncio.wait_for(state.backend.run(request), self.timeout_s)
            except ModelError as exc:
                if not exc.retryable:
                    self._succeeded(state)  # the backend is fine; the input was not
                    raise
                self._failed(state, exc)
                last_error = exc
            except asyncio.TimeoutError:
                last_error = BackendTimeout(f"{state.backend.name} did not answer in {self.timeout_s:g} s")
                self._failed(state, last_error)
            except Exception as exc:  # an engine crash: fail over rather than fail the request
                self._failed(state, exc)
                last_error = exc
            else:
                self._succeeded(state)
                return answered_by(result, state.backend)
        raise ModelUnavailable(self.unavailable_reason()) from last_error

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        """Stream from the first backend that yields its first chunk; fail over only before that.

        A backend that cannot stream answers with its whole result as its one chunk (a cloud video
        provider beside a local engine that reports its steps).
        """
        last_error: BaseException | None = None
        for state in self._candidates(request):
            stream_fn = getattr(state.backend, "stream", None) or _whole(state.backend)
            iterator = stream_fn(request).__aiter__()
            try:
                first = await asyncio.wait_for(iterator.__anext__(), self.timeout_s)
            except StopAsyncIteration:
                self._succeeded(state)
                return
            except ModelError as exc:
                if not exc.retryable:
                    self._succeeded(state)
                    raise
                self._failed(state, exc)
                last_error = exc
                continue
            except asyncio.TimeoutError:
                last_error = BackendTimeout(f"{state.backend.name} did not answer in {self.timeout_s:g} s")
                self._failed(state, last_error)
                continue
            except Exception as exc:
                self._failed(state, exc)
                last_error = exc
                continue
            yield answered_by(first, state.backend)
            async for chunk in iterator:
                yield answered_by(chunk, state.backend)
            self._succeeded(state)
            return
        raise ModelUnavailable(self.unavailable_reason()) from last_error
