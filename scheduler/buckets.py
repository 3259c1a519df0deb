"""The two limits a grant must pass: a token bucket (rate with burst) and a concurrency limit.

Time is always passed in (`now`, in seconds on any monotonic clock), never read here, so that the
policy runs the same on a simulated clock in tests and benchmarks as on the actor's event loop.
"""

from __future__ import annotations

import math

# Refills accumulate floating-point error: a bucket that should hold exactly one token after
# waiting `wait_s()` may hold 0.9999999999, more so on a clock far from zero, where `now` itself is
# coarse. Accepting that shortfall keeps the actor from waking up early, finding nothing to do and
# sleeping again for a few nanoseconds.
_EPSILON = 1e-9
_CLOCK_ULPS = 4


class TokenBucket:
    """A bucket of `capacity = max(burst, 1)` tokens refilled at `rate_per_s`; a grant takes one.

    It starts full, and its clock starts at the first `now` it is given (or at `start`). Over any
    window of T seconds it lets through at most `rate_per_s × T + capacity` grants. A rate of 0
    lets the first `capacity` through and then nothing more.
    """

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    def __init__(self, rate_per_s: float, burst: float, start: float | None = None) -> None:
        self._rate = rate_per_s
        self._capacity = max(burst, 1.0)
        self._tokens = self._capacity
        self._updated = start

    @property
    def rate_per_s(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    def configure(self, rate_per_s: float, burst: float) -> None:
        """Change rate and burst, keeping the tokens held (no more than the new capacity).

        The time since the last refill is credited at the new rate on the next call.
        """
        self._rate = rate_per_s
        self._capacity = max(burst, 1.0)
        self._tokens = min(self._tokens, self._capacity)

    def tokens(self, now: float) -> float:
        """Tokens held at `now`."""
        self._refill(now)
        return self._tokens

    def ready(self, now: float) -> bool:
        """Whether a grant may take a token at `now`."""
        # Called for every grant considered: `_refill` inlined, and the tolerance (a `math.ulp`)
        # computed only for a bucket short of a whole token.
        updated = self._updated
        if updated is None:
            self._updated = now
        elif now > updated:
            self._tokens = min(self._capacity, self._tokens + (now - updated) * self._rate)
            self._updated = now
        return self._tokens >= 1.0 or self._tokens >= 1.0 - self._tolerance(now)

    def take(self, now: float) -> None:
        """Take one token; the caller checked `ready(now)`."""
        updated = self._updated
        if updated is not None and now <= updated and self._tokens >= 1.0:  # `ready` just said so
            self._tokens -= 1.0
            return
        if not self.ready(now):
            raise RuntimeError("token bucket is empty")
        self._tokens -= 1.0

    def wait_s(self, now: float) -> float:
        """Seconds from `now` until a token is available: 0 if one is, `inf` if none ever will be."""
        missing = 1.0 - self.tokens(now)
        if missing <= self._tolerance(now):
            return 0.0
        if self._rate <= 0.0:
            return math.inf
        return missing / self._rate

    def _tolerance(self, now: float) -> float:
        return _EPSILON + _CLOCK_ULPS * self._rate * math.ulp(now)

    def _refill(self, now: float) -> None:
        # A clock that steps back (or two callers with slightly different `now`) must not drain
        # the bucket: only time moving forward adds tokens.
        if self._updated is None:
            self._updated = now
        elif now > self._updated:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now


class ConcurrencyLimit:
    """At most `limit` holders at once. Lowering the limit below the holders evicts nobody: new
    acquisitions wait until enough have released."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @property
    def available(self) -> bool:
        return self.in_flight < self.limit

    def acquire(self) -> None:
        """Take a slot; the caller checked `available`."""
        if self.in_flight >= self.limit:
            raise RuntimeError("concurrency limit reached")
        self.in_flight += 1

    def release(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("release without acquire")
        self.in_flight -= 1
