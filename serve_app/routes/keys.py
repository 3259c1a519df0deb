"""API keys (role `admin`): issue one for a tenant and role, list them without secrets, revoke one."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from serve_app.auth import TENANT_ID, Principal, Role, valid_tenant
from serve_app.deps import admin, get_platform
from serve_app.errors import ERROR_RESPONSES, not_found
from serve_app.platform import Platform

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"], responses=ERROR_RESPONSES)


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Annotated[str, Field(description="The tenant the key acts for", max_length=128)]
    role: Role = Role.USER
    name: Annotated[str, Field(min_length=1, max_length=128, description="What the key is for")]
    expires_at: Annotated[AwareDatetime | None, Field(description="RFC 3339 with an offset; none: never")] = None

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not valid_tenant(value):
            raise ValueError("a tenant id is 1 to 128 letters, digits, `_`, `.`, `@` or `-`")
        return value

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(timezone.utc):
            raise ValueError("the expiry must be in the future")
        return value


class ApiKeyOut(BaseModel):
    """A key as listed: never its secret."""

    id: str
    tenant: str
    role: Role
    name: str
    created_at: str
    expires_at: str | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="`lbk_...`: shown this once, stored only as a hash")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


KeyIdPath = Annotated[str, Path(description="A key's id", max_length=64)]


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Issue an API key for a tenant and role; the key is in this answer only",
)
def create_key(
    body: ApiKeyIn, principal: Principal = Depends(admin), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    record, key = platform.keys.create(body.tenant, body.role, body.name, body.expires_at)
    return JSONResponse({**record, "key": key}, status_code=201)


@router.get("", response_model=ApiKeyList, summary="The API keys (of one tenant), without their secrets")
def list_keys(
    tenant: Annotated[str | None, Query(max_length=128, pattern=TENANT_ID.pattern)] = None,
    principal: Principal = Depends(admin),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    return JSONResponse({"items": platform.keys.list(tenant)})


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key: 401 with it from the next request on")
def revoke_key(
    key_id: KeyIdPath, principal: Principal = Depends(admin), platform: Platform = Depends(get_platform)
) -> Response:
    if not platform.keys.revoke(key_id):
        raise not_found(f"API key {key_id!r}")
    return Response(status_code=204)
