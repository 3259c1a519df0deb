"""ASGI middleware: the body's size and time limits, and request metrics.

Serve's proxy gives every request an id and returns it as `X-Request-ID` (the client's own, if it
sent one); Serve's logs carry the same id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from serve_app.settings import Settings


class BodyRejected(HTTPException):
    """Raised while a body streams in, past the size limit (413) or too slowly (408).

    An HTTPException, because FastAPI turns any other error met while parsing a body into a 400.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


def too_large(limit: int) -> BodyRejected:
    return BodyRejected(413, "payload_too_large", f"the body is larger than the limit of {limit} bytes")


def too_slow(timeout_s: float) -> BodyRejected:
    return BodyRejected(408, "request_timeout", f"the body did not arrive within {timeout_s:g} s")


class BodyLimitMiddleware:
    """Answers 413 for a body over the size limit (by its Content-Length or as it streams in) and
    408 for one that does not arrive within the time limit."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app = app
        self.settings = settings  # a callable: the limits are known only once the replica has its settings

    async def _reject(self, send: Send, error: BodyRejected) -> None:
        body = json.dumps({"error": {"code": error.code, "message": error.detail, "details": []}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings()
        limit, timeout_s = settings.max_body_bytes, settings.body_timeout_s
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._reject(send, too_large(limit))
                    return
        received = 0
        body_done = False
        deadline: float | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # after the body, a receive waits for the disconnect: as long as a stream lasts
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise too_slow(timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyRejected as error:
            if not started:
                await self._reject(send, error)


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
