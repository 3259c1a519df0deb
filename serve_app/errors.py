"""The one place where exceptions become the JSON error body of API.md.

`{"error": {"code": "<snake_case>", "message": "<for a person>", "details": [...]}}`
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import PlatformError, causes, unwrap

# A replica or actor that died mid-call, cannot be reached, or has no room (Serve replaces and
# scales them): the same call can succeed in a moment, so these are a 503, not a 500.
UNAVAILABLE_ERRORS = (RayActorError, BackPressureError)
UNAVAILABLE_RETRY_AFTER_S = 5.0

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]]


class ErrorBody(BaseModel):
    """The body of every error response (API.md, "Errors")."""

    error: ErrorDetail


# The error statuses of API.md (and 405, 408), declared on every route of /openapi.json so that
# clients and the fuzz test know each one and its body.
ERROR_STATUSES = {
    400: "Invalid input of the right shape",
    401: "No token, or a bad one",
    403: "The role or the tenant does not allow it",
    404: "Does not exist, or belongs to another tenant",
    405: "The route does not take this method",
    408: "The body did not arrive in time",
    409: "The resource's state forbids it",
    413: "The body is over the limit",
    415: "An unsupported media type",
    422: "Schema validation failed",
    429: "The tenant is over its quota (see Retry-After)",
    502: "A model backend failed",
    503: "Overloaded, starting, or the model is unavailable (see Retry-After)",
    504: "A model backend did not answer in time",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in ERROR_STATUSES.items()
}


class ApiError(PlatformError):
    """An error of the ingress itself (a missing model, a forbidden action): each call names its
    HTTP status and stable `code`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, details, code=code, status=status, retry_after_s=retry_after)


class ServiceUnavailable(PlatformError):
    """A replica or actor died mid-call, cannot be reached, or has no room: try again in a moment."""

    code = "service_unavailable"
    status = 503
    retryable = True


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist")


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def http_error_of(exc: BaseException) -> PlatformError | None:
    """The error the ingress answers `exc` with, however Ray wrapped it: a platform error, or a 503
    for an unavailable replica; None for anything else (a bug)."""
    error = unwrap(exc)
    if error is None and any(isinstance(link, UNAVAILABLE_ERRORS) for link in causes(exc)):
        message = "the replica serving this call failed or is busy; try again"
        error = ServiceUnavailable(message, retry_after_s=UNAVAILABLE_RETRY_AFTER_S)
    return error


# pydantic names the member of a union that failed in the error's location (`input.constrained-str`,
# `input.list[constrained-str]`, `tools.0.function-after[...]`): not a field the client sent.
UNION_MEMBER = re.compile(r"^([a-z]+-[a-z-]+(\[.*\])?|[a-z]+\[.*\]|str|int|float|bool|dict|list|none)$")


def _field(loc: tuple[Any, ...]) -> str:
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path", "header") and not (isinstance(p, str) and UNION_MEMBER.match(p))
    ]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    async def known_error(_: Request, exc: Exception) -> JSONResponse:
        error = http_error_of(exc)
        if error is None:
            log.exception("unhandled error", exc_info=exc)
            return error_response(500, "internal_error", "the server failed; this is a bug, and it has been logged")
        retry_after = error.retry_after_s
        if retry_after is None and error.status == 503:
            retry_after = UNAVAILABLE_RETRY_AFTER_S
        return error_response(error.status, error.code, error.message, error.details, retry_after)

    app.add_exception_handler(PlatformError, known_error)
    # Errors that reach this far unconverted (a wrapped domain error from a replica, or a bug).
    app.add_exception_handler(Exception, known_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": _field(tuple(e.get("loc", ()))), "reason": e.get("msg", "invalid")} for e in exc.errors()]
        first = details[0] if details else {"field": "body", "reason": "invalid"}
        return error_response(422, "validation_error", f"{first['field']}: {first['reason']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own HTTP errors: 400 is a body it could not parse (not UTF-8, broken multipart).
        codes = {
            400: "invalid_body",
            404: "not_found",
            405: "method_not_allowed",
            408: "request_timeout",
            413: "payload_too_large",
            401: "unauthorized",
        }
        code = codes.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
