"""Model management (role `admin`): each service's backends with their live failover state, and
their order and the disabled ones changed at run time (deployments/control.py)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from deployments.control import (
    FOLLOW_S,
    HEARTBEAT_S,
    REPORT_INTERVAL_S,
    Arrangement,
    aggregate,
    fresh_reports,
    load_arrangement,
    replicas_apply,
    save_arrangement,
)
from serve_app.auth import Principal
from serve_app.deps import admin, get_platform
from serve_app.errors import ERROR_RESPONSES, not_found
from serve_app.platform import Platform

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin/models", tags=["admin"], responses=ERROR_RESPONSES)

BackendName = Annotated[str, Field(max_length=64)]
BackendNames = Annotated[list[BackendName], Field(max_length=16)]


class ArrangementIn(BaseModel):
    """Either or both; an omitted one keeps its current value."""

    model_config = ConfigDict(extra="forbid")

    backends: BackendNames | None = Field(
        default=None, description="Failover order: these first, the service's other backends after them"
    )
    disabled: BackendNames | None = Field(default=None, description="Skipped by failover; [] enables all")


class ReplicaView(BaseModel):
    replica: str
    status: str
    reason: str | None
    calls: int
    failures: int


class BackendView(BaseModel):
    name: str
    model: str | None
    status: Literal["ready", "failing", "cooling_down", "unavailable"] = Field(
        description="The worst status of any replica"
    )
    reason: str | None
    disabled: bool
    calls: int = Field(description="Summed over the replicas")
    failures: int = Field(description="Summed over the replicas")
    replicas: list[ReplicaView]


class ServiceModels(BaseModel):
    service: str
    replicas: int = Field(description="Replicas that reported in the last seconds")
    backends: list[BackendView] = Field(description="In failover order")


class ModelsView(BaseModel):
    services: dict[str, ServiceModels]


def configured_backends(platform: Platform, service: str) -> list[str]:
    return [backend.name for backend in platform.settings.services[service].backends]


def service_view(platform: Platform, service: str) -> dict[str, Any]:
    reports = fresh_reports(platform.store, service, time.time())
    arrangement = load_arrangement(platform.store, service)
    backends = aggregate(configured_backends(platform, service), arrangement, reports)
    return {"service": service, "replicas": len(reports), "backends": backends}


@router.get("", response_model=ModelsView, summary="Each service's backends in failover order, with their live state")
def list_models(principal: Principal = Depends(admin), platform: Platform = Depends(get_platform)) -> JSONResponse:
    return JSONResponse(
        {"services": {service: service_view(platform, service) for service in platform.settings.services}}
    )


@router.put(
    "/{service}",
    response_model=ServiceModels,
    summary="Reorder or disable a service's backends at once, on every replica; stored durably",
)
def arrange_models(
    service: Annotated[str, Path(description="A service, e.g. `llm`", max_length=64)],
    body: ArrangementIn,
    principal: Principal = Depends(admin),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    service = service.lower()
    if service not in platform.settings.services:
        raise not_found(f"service {service!r}")
    configured = configured_backends(platform, service)
    current = (load_arrangement(platform.store, service) or Arrangement(())).within(configured)
    arrangement = Arrangement.of(
        configured,
        current.backends if body.backends is None else body.backends,
        sorted(current.disabled) if body.disabled is None else body.disabled,
    )
    save_arrangement(platform.store, service, arrangement)
    wait_for_replicas(platform, service, arrangement)
    platform.forget_status(service)  # `/v1/models` names the serving backend from it
    return JSONResponse(service_view(platform, service))


# Replicas look every FOLLOW_S and report within REPORT_INTERVAL_S; a replica that does not say so
# by then is stuck or gone (its report turns stale), and the answer does not wait for it longer.
FOLLOW_WAIT_S = HEARTBEAT_S + FOLLOW_S + REPORT_INTERVAL_S


def wait_for_replicas(platform: Platform, service: str, arrangement: Arrangement) -> None:
    """Return once every live replica of the service applies `arrangement`, so that the calls
    made after the PUT's answer use it everywhere (replicas follow it off their calls' path)."""
    deadline = time.monotonic() + FOLLOW_WAIT_S
    while not replicas_apply(platform.store, service, arrangement, time.time()):
        if time.monotonic() > deadline:
            log.warning("not every %s replica says it applies %s yet", service, arrangement.to_doc())
            return
        time.sleep(FOLLOW_S / 2)
