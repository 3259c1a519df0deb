"""Admin routes (role `admin`): tenant settings and the scheduler's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serve_app.auth import Principal, valid_tenant
from serve_app.deps import admin, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError
from serve_app.platform import Platform

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)

TenantPath = Annotated[str, Path(description="A tenant id", max_length=128)]


class TenantSettingsIn(BaseModel):
    """Any subset of a tenant's settings; omitted ones keep their value."""

    model_config = ConfigDict(extra="forbid")

    weight: Annotated[float | None, Field(gt=0, le=1e6)] = None
    max_concurrency: Annotated[int | None, Field(ge=0, le=1_000_000)] = None
    rate_per_s: Annotated[float | None, Field(ge=0, le=1e9)] = None
    burst: Annotated[float | None, Field(ge=0, le=1e9)] = None
    max_queued: Annotated[int | None, Field(ge=0, le=10_000_000)] = None


def check_tenant(tenant: str) -> str:
    if not valid_tenant(tenant):
        raise ApiError(404, "not_found", f"tenant {tenant!r} does not exist")
    return tenant


@router.get("/tenants", summary="Every configured or active tenant with its settings")
async def list_tenants(
    principal: Principal = Depends(admin), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    return JSONResponse({"items": await platform.scheduler.call("tenants")})


@router.get("/tenants/{tenant}", summary="A tenant's settings (the defaults for a tenant never set)")
async def get_tenant(
    tenant: TenantPath, principal: Principal = Depends(admin), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    return JSONResponse(await platform.scheduler.call("tenant", check_tenant(tenant)))


@router.put("/tenants/{tenant}", summary="Merge settings into a tenant's; stored durably, applied at once")
async def put_tenant(
    tenant: TenantPath,
    body: TenantSettingsIn,
    principal: Principal = Depends(admin),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    changes = body.model_dump(exclude_none=True)
    return JSONResponse(await platform.scheduler.call("set_tenant", check_tenant(tenant), changes))


@router.get("/scheduler", summary="Per service: queue, in-flight, dispatch limit, virtual times per tenant")
async def scheduler_state(
    principal: Principal = Depends(admin), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    return JSONResponse(await platform.scheduler.call("stats"))
