"""What the routes share inside one ingress replica: settings, auth, and the modality handles.

The ingress deployment makes one `Platform` when its replica starts; routes reach it through the
`platform` dependency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from deployments.types import SERVICES
from serve_app.auth import Principal, TokenVerifier
from serve_app.errors import ApiError, model_error_of
from serve_app.settings import Settings

log = logging.getLogger(__name__)

# Status of a modality is asked of its replicas at most this often.
STATUS_TTL_S = 5.0


def api_error_of(exc: BaseException) -> ApiError | None:
    """The HTTP error for an exception raised by a modality replica, if it is a model error."""
    model_error = model_error_of(exc)
    if model_error is None:
        return None
    retry_after = 5.0 if model_error.status == 503 else None
    return ApiError(model_error.status, model_error.code, model_error.message, model_error.details, retry_after)


class Platform:
    """The ingress's view of the platform."""

    def __init__(self, settings: Settings, handles: dict[str, Any]) -> None:
        self.settings = settings
        self.handles = handles
        self.verifier = TokenVerifier(settings.jwt_verify_key, settings.jwt_algorithm)
        self._status: dict[str, tuple[float, dict[str, Any]]] = {}

    # -------------------------------------------------------------- auth

    def authenticate(self, request: Request) -> Principal:
        return self.verifier.verify(request.headers.get("authorization"))

    # -------------------------------------------------------------- models

    async def status(self, service: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The modality's readiness and backends, cached briefly; a silent replica is not ready."""
        cached = self._status.get(service)
        if cached and time.monotonic() - cached[0] < STATUS_TTL_S:
            return cached[1]
        try:
            status = await asyncio.wait_for(self.handles[service].status.remote(), timeout_s)
        except asyncio.TimeoutError:
            return {
                "service": service,
                "ready": False,
                "reason": "the deployment did not answer in time",
                "backends": [],
            }
        except Exception as exc:  # a replica that is starting or failed: report, don't raise
            return {"service": service, "ready": False, "reason": f"the deployment failed: {exc}", "backends": []}
        self._status[service] = (time.monotonic(), status)
        return status

    async def all_status(self) -> dict[str, dict[str, Any]]:
        results = await asyncio.gather(*(self.status(s) for s in SERVICES))
        return dict(zip(SERVICES, results, strict=True))

    async def resolve_model(self, name: str | None, services: tuple[str, ...]) -> str:
        """The service that serves the model `name`: a service name, or a backend's model name."""
        if name is None or name.lower() in services:
            return (name or services[0]).lower()
        for service in services:
            status = await self.status(service)
            if any(b["model"] == name for b in status.get("backends", [])):
                return service
        raise ApiError(404, "model_not_found", f"the model {name!r} does not exist; GET /v1/models lists the models")

    async def serving_model(self, service: str) -> str:
        """The model name of the first ready backend, for the `model` field of responses."""
        status = await self.status(service)
        for backend in status.get("backends", []):
            if backend.get("ready"):
                return str(backend["model"])
        return service

    # -------------------------------------------------------------- calls

    async def call(self, service: str, request: Any) -> Any:
        """One model call to a modality, with its errors turned into HTTP errors."""
        try:
            return await self.handles[service].run.remote(request)
        except Exception as exc:
            api_error = api_error_of(exc)
            if api_error is None:
                raise
            raise api_error from exc

    async def stream(self, service: str, request: Any) -> AsyncIterator[Any]:
        """A streamed model call; errors before the first chunk are HTTP errors."""
        generator = self.handles[service].options(stream=True).stream.remote(request)
        try:
            async for chunk in generator:
                yield chunk
        except Exception as exc:
            api_error = api_error_of(exc)
            if api_error is None:
                raise
            raise api_error from exc
