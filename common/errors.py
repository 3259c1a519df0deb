"""The platform's one error type, and how to find it again after Ray has wrapped it.

Every package raises subclasses of `PlatformError` (`ModelError`, `SchedulerError`, `DagError`,
the ingress's `ApiError`); the ingress maps any of them to the JSON error body of API.md in one
place. No Ray import here: the scheduler's policy modules import these errors and must stay plain
Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# How many links of a chain of wrapped errors to follow: Ray wraps once per process boundary
# (ingress -> executor -> replica), and a cycle of `__cause__` must not loop forever.
MAX_DEPTH = 8


class PlatformError(Exception):
    """An error with a stable `code`, the HTTP `status` it maps to, and whether a retry may succeed.

    `code`, `status` and `retryable` are class-level defaults that a subclass sets once and an
    instance may override by keyword (`PlatformError("...", code="starting", status=503)`).
    `retry_after_s` is what `Retry-After` says for a 429 or a 503.
    """

    code: str = "internal_error"
    status: int = 500
    retryable: bool = False

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles errors across processes. Rebuild without the subclass's `__init__`, whose
        # signature may differ (`ApiError`, `QuotaExceeded`), and restore every instance field: the
        # subclass, the details and per-instance overrides all survive.
        return (_rebuild, (type(self), self.args), self.__dict__.copy())


def _rebuild(cls: type[PlatformError], args: tuple[Any, ...]) -> PlatformError:
    return cls.__new__(cls, *args)  # pickle then restores the fields from the state


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps, outermost first: `RayTaskError.cause` (where Ray keeps the
    original error), else `__cause__` (`raise ... from ...`); at most `MAX_DEPTH` links."""
    current: BaseException | None = exc
    for _ in range(MAX_DEPTH):
        if current is None:
            return
        yield current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__


def unwrap(exc: BaseException) -> PlatformError | None:
    """The `PlatformError` in `exc`, whether it is one, Ray wrapped it, or it was raised `from` it."""
    for link in causes(exc):
        # Ray's `as_instanceof_cause()` wrapper is a PlatformError subclass too, but it reads `code`
        # and `status` from the class, not the instance's overrides: take the original it wraps.
        if isinstance(link, PlatformError) and not isinstance(getattr(link, "cause", None), BaseException):
            return link
    return None
