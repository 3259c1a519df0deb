"""The scheduler's errors: each has a stable `code` and an HTTP `status` that the ingress maps once."""

from __future__ import annotations

from typing import Any

from common.errors import PlatformError


class SchedulerError(PlatformError):
    """Base of every error the scheduler raises.

    `code` and `status` are class-level so that the ingress can map any subclass without knowing it.
    """

    code = "scheduler_error"
    status = 500


class _RetryLater(SchedulerError):
    """An error that tells the client when to come back (`Retry-After`): a later attempt may succeed."""

    retryable = True

    def __init__(self, message: str, retry_after_s: float, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, details, retry_after_s=retry_after_s)


class QuotaExceeded(_RetryLater):
    """The tenant is over its own quota: too many queued requests, or (for a call that must not wait)
    its concurrency or rate limit."""

    code = "quota_exceeded"
    status = 429


class ServiceOverloaded(_RetryLater):
    """The service's queue is full, whoever the tenant is."""

    code = "service_overloaded"
    status = 503


class UnknownService(SchedulerError):
    """A service the scheduler was not configured with."""

    code = "unknown_service"
    status = 400


class UnknownTicket(SchedulerError):
    """A ticket that is not granted (never was, or already released or cancelled)."""

    code = "unknown_ticket"
    status = 404


class InvalidSettings(SchedulerError):
    """Tenant settings or service limits out of range (a weight of 0, a negative count, a bad field)."""

    code = "invalid_settings"
    status = 422
