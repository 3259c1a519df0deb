"""What the fake Google servers (Gemini, Cloud Speech and Text-to-Speech) share: the request they
record, how a handler reads one, and Google's JSON error body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qs, urlsplit

# Google's RPC status names for the HTTP statuses the tests use.
ERROR_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class RecordedRequest:
    """One call as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]


R = TypeVar("R", bound=RecordedRequest)


def read_post(handler: BaseHTTPRequestHandler, record_class: type[R]) -> tuple[SplitResult, R]:
    """The URL and the recorded request of the POST the handler is answering."""
    url = urlsplit(handler.path)
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    request = record_class(
        method="POST",
        path=url.path,
        query=parse_qs(url.query),
        headers={k.lower(): v for k, v in handler.headers.items()},
        body=json.loads(raw) if raw else {},
    )
    return url, request


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": ERROR_STATUS.get(status, "UNKNOWN")}}
