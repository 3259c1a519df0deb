"""Liveness and readiness, without auth, for load balancers and Kubernetes probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from serve_app.deps import get_platform
from serve_app.errors import ERROR_RESPONSES, error_response
from serve_app.platform import Platform

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="200 while the ingress runs")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="200 when every deployment is ready, else 503 with what is not",
    responses={503: ERROR_RESPONSES[503]},
)
async def readyz(platform: Platform = Depends(get_platform)) -> JSONResponse:
    statuses = await platform.all_status()
    services = {
        service: {"ready": bool(status.get("ready")), "reason": status.get("reason")}
        for service, status in statuses.items()
    }
    not_ready = [service for service, state in services.items() if not state["ready"]]
    if not_ready:
        details = [{"field": f"services.{s}", "reason": services[s]["reason"] or "not ready"} for s in not_ready]
        return error_response(503, "not_ready", f"not ready: {', '.join(not_ready)}", details, retry_after=5)
    return JSONResponse({"status": "ready", "services": services})
