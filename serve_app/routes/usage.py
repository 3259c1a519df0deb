"""Usage statistics per day, tenant and service: a tenant's own, and every tenant's for admins."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from modalities import SERVICES
from modalities.metering import read_usage
from serve_app.auth import Principal, valid_tenant
from serve_app.deps import admin, authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError
from serve_app.platform import Platform

router = APIRouter(prefix="/v1", tags=["usage"], responses=ERROR_RESPONSES)

Days = Annotated[int, Query(ge=1, le=366, description="How many days back, today (UTC) included")]


async def usage_response(platform: Platform, days: int, tenant: str | None, service: str | None) -> JSONResponse:
    items: list[dict[str, Any]] = await asyncio.to_thread(read_usage, platform.store, days, tenant, service)
    return JSONResponse({"items": items})


@router.get("/usage", summary="The caller's tenant's usage per day and service, oldest day first")
async def own_usage(
    days: Days = 7, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    return await usage_response(platform, days, principal.tenant, None)


@router.get("/admin/usage", summary="Every tenant's usage per day and service (role admin)")
async def all_usage(
    days: Days = 7,
    tenant: Annotated[str | None, Query(max_length=128, description="Only this tenant")] = None,
    service: Annotated[str | None, Query(max_length=32, description="Only this service")] = None,
    principal: Principal = Depends(admin),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    problems = []
    if tenant is not None and not valid_tenant(tenant):
        problems.append({"field": "tenant", "reason": "not a tenant id"})
    if service is not None and service.lower() not in SERVICES:
        problems.append({"field": "service", "reason": f"not one of {list(SERVICES)}"})
    if problems:
        raise ApiError(422, "validation_error", f"{problems[0]['field']}: {problems[0]['reason']}", problems)
    return await usage_response(platform, days, tenant, service.lower() if service else None)
