"""`/v1/batches`: create, retrieve, list and cancel batches of requests (OpenAI's format); see
`serve_app.batches` for how their lines run."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from serve_app import batches
from serve_app.auth import Principal
from serve_app.batches import BatchCreateRequest
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES
from serve_app.platform import Platform

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

BatchIdPath = Annotated[str, Path(max_length=100)]


@router.post("/batches", summary="Run a file of requests as a batch (each line a low-priority call)")
async def create_batch(
    body: BatchCreateRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    return await batches.create(platform, principal, body)


@router.get("/batches/{batch_id}", summary="A batch, its request counts current")
async def get_batch(
    batch_id: BatchIdPath,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    return await asyncio.to_thread(batches.refresh, platform, principal.tenant, batch_id)


@router.get("/batches", summary="The tenant's batches, newest first (OpenAI's cursor paging)")
async def list_batches(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=100)] = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    return await asyncio.to_thread(batches.page, platform, principal.tenant, limit, after)


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch: its lines not yet run are cancelled")
async def cancel_batch(
    batch_id: BatchIdPath,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    return await batches.cancel(platform, principal.tenant, batch_id)
