"""ASGI middleware: the body size limit and request metrics.

Serve's proxy gives every request an id and returns it as `X-Request-ID` (the client's own, if it
sent one); Serve's logs carry the same id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised while a body streams in past the limit.

    An HTTPException, because FastAPI turns any other error met while parsing a body into a 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Answers 413 for a body over the limit, by its Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, max_body_bytes: Callable[[], int]) -> None:
        self.app = app
        self.limit = max_body_bytes  # a callable: the limit is known only once the replica has its settings

    async def _reject(self, send: Send, limit: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"the body is larger than the limit of {limit} bytes",
                    "details": [],
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > limit
                except ValueError:
                    too_large = False
                if too_large:
                    await self._reject(send, limit)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send, limit)


class RequestMetricsMiddleware:
    """Counts requests and times them per route template, method and status (Ray's metrics API,
    so they appear on Ray's Prometheus endpoint with the rest of the cluster's metrics)."""

    def __init__(self, app: ASGIApp) -> None:
        from ray.util import metrics

        self.app = app
        self.requests = metrics.Counter(
            "labubu_http_requests", "HTTP requests answered", tag_keys=("route", "method", "status")
        )
        self.latency = metrics.Histogram(
            "labubu_http_request_seconds",
            "Time to the response's first byte",
            boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
            tag_keys=("route", "method"),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                tags = {"route": _route(scope), "method": scope["method"]}
                self.latency.observe(time.perf_counter() - start, tags)
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            self.requests.inc(1, {"route": _route(scope), "method": scope["method"], "status": str(status)})


def _route(scope: Scope) -> str:
    # The route's template (`/v1/workflows/{workflow_id}`), never the raw path: ids would make
    # one time series per workflow.
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
