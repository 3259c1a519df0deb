"""The one place where exceptions become the JSON error body of API.md.

`{"error": {"code": "<snake_case>", "message": "<for a person>", "details": [...]}}`
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.types import ModelError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the ingress answers with, carrying its HTTP status and stable `code`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after


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


def model_error_of(exc: BaseException) -> ModelError | None:
    """The `ModelError` raised in a replica, whether Ray hands it over as is or wrapped."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, ModelError):
            return current
        cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError keeps the original here
        current = cause if isinstance(cause, BaseException) else current.__cause__
        seen += 1
    return None


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": _field(tuple(e.get("loc", ()))), "reason": e.get("msg", "invalid")} for e in exc.errors()]
        first = details[0] if details else {"field": "body", "reason": "invalid"}
        return error_response(422, "validation_error", f"{first['field']}: {first['reason']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 401: "unauthorized"}
        code = codes.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        model_error = model_error_of(exc)
        if model_error is not None:
            retry_after = 5.0 if model_error.status == 503 else None
            return error_response(
                model_error.status, model_error.code, model_error.message, model_error.details, retry_after
            )
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed; this is a bug, and it has been logged")
