"""A chat's grant, asked for when its headers arrive rather than once its body is parsed.

Serve's proxy hands a request to the ingress with its headers only: the replica then fetches the
body from the proxy (a round trip, about 3 ms on 2 cores), FastAPI parses it, and the route asked
the scheduler for its grant only then (another round trip, about 2 ms). The grant needs only the
tenant, which the bearer token names, and an estimate: `EarlyGrants` asks for it as the request comes
in, so that the two round trips overlap.

Until the body is read, the estimate is the body's length in characters with the default
`max_tokens`; the route's call then replaces it with its own (`SchedulerClient.take`), so the call is
charged as an ordinary grant is. A grant the route does not use (a body it refuses, an error before
the call) is given back, refunded in full. Only JWT callers: an API key is checked by a store read,
which the grant would have to wait for anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.client import AskedGrant, SchedulerClient

if TYPE_CHECKING:
    from serve_app.platform import Platform

# The routes whose call is one interactive call of one service, asked for by the request's tenant.
EARLY_SERVICES = {"/v1/chat/completions": "llm", "/v1/completions": "llm"}


@dataclass
class EarlyGrant:
    service: str
    tenant: str
    asked: AskedGrant
    scheduler: SchedulerClient
    settled: bool = False  # taken by the request's first call, or given back

    def give_back(self) -> None:
        if not self.settled:
            self.settled = True
            self.scheduler.give_back(self.asked)


# The request's early grant: set by the middleware, in the task that runs the route.
_current: ContextVar[EarlyGrant | None] = ContextVar("early_grant", default=None)


def take(service: str, tenant: str, priority: str) -> AskedGrant | None:
    """The request's early grant, if its first model call is the one it was asked for: `service`,
    by the token's tenant, at the default priority. Any other first call (a chat's images captioned
    by `pic2text`) gives it back at once, so that it holds no slot of `service` meanwhile."""
    early = _current.get()
    if early is None or early.settled:
        return None
    if (early.service, early.tenant, priority) != (service, tenant, "default"):
        early.give_back()
        return None
    early.settled = True
    return early.asked


class EarlyGrantsMiddleware:
    """Asks for the grant of an `EARLY_SERVICES` request at its headers, and gives it back if the
    route did not take it."""

    def __init__(self, app: ASGIApp, platform: Callable[[], Platform | None]) -> None:
        self.app = app
        self.platform = platform  # a callable: the replica's platform is set up after the app is made

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = EARLY_SERVICES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        platform = self.platform() if service is not None else None
        early = platform.ask_early(service, dict(scope["headers"])) if platform and service else None
        if early is None:
            await self.app(scope, receive, send)
            return
        reset = _current.set(early)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(reset)
            early.give_back()  # if the route did not take it
