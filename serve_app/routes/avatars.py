"""`/v1/avatars`: a tenant's personas (name, instructions, voice, portrait, greeting).

A realtime session names one with `?avatar=<id>` at connect; a chat with `metadata.avatar`. The
portrait is uploaded as a data URL (or plain base64) in the JSON body, or made by `text2pic` from
`portrait_prompt`. Updates are `POST /v1/avatars/{id}` (OpenAI's style for modifying an object)
or `PATCH`, and change only the fields sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from deployments.types import ImageRequest
from serve_app import avatars
from serve_app.auth import Principal
from serve_app.avatars import OPENAI_VOICES, Avatar, AvatarCreate, AvatarFields, AvatarList
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES
from serve_app.openai_format import check_media, invalid
from serve_app.platform import Platform

router = APIRouter(prefix="/v1", tags=["avatars"], responses=ERROR_RESPONSES)

PORTRAIT_SIZE = 256


async def check_voice(platform: Platform, voice: str | None) -> None:
    """A voice the tts backends list, or an OpenAI name (spoken in the default voice, as
    `/v1/audio/speech` does). A backend that lists no voices takes any name."""
    if voice is None or voice in OPENAI_VOICES:
        return
    status = await platform.status("tts")
    listed = [v for backend in status.get("backends", []) for v in backend.get("voices", [])]
    if listed and voice not in listed:
        raise invalid("voice", f"{voice!r} is not a voice of the tts backends ({', '.join(listed)})", 422)


def decode_portrait(value: str) -> bytes:
    """The image of a data URL or of plain base64, checked to be a PNG or JPEG."""
    payload = value.partition(",")[2] if value.startswith("data:") else value
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("portrait", "must be a base64 data URL or base64 of a PNG or JPEG image") from None
    return check_media(data, "portrait", "image")


def content_type_of(image: bytes) -> str:
    return "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"


async def make_portrait(
    platform: Platform, principal: Principal, fields: AvatarFields
) -> tuple[bytes, str, str | None] | None:
    """The portrait a request gives (uploaded, or drawn by `text2pic`), or None if it gives none."""
    if fields.portrait is not None and fields.portrait_prompt is not None:
        raise invalid("portrait", "send `portrait` or `portrait_prompt`, not both", 422)
    if fields.portrait is not None:
        image = await asyncio.to_thread(decode_portrait, fields.portrait)
        return image, content_type_of(image), None
    if fields.portrait_prompt is not None:
        if not fields.portrait_prompt.strip():
            raise invalid("portrait_prompt", "is empty")
        request = ImageRequest(prompt=fields.portrait_prompt, width=PORTRAIT_SIZE, height=PORTRAIT_SIZE)
        result = await platform.call("text2pic", request, principal)
        return result.images[0], "image/png", fields.portrait_prompt
    return None


@router.post("/avatars", summary="Create an avatar", response_model=Avatar)
async def create_avatar(
    body: AvatarCreate,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    await check_voice(platform, body.voice)
    portrait = await make_portrait(platform, principal, body)
    return await asyncio.to_thread(avatars.save, platform, principal.tenant, avatars.new(body), portrait)


@router.get("/avatars", summary="List the tenant's avatars", response_model=AvatarList)
async def list_avatars(
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None),
    order: str = Query("desc", pattern="^(asc|desc)$"),
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    return await asyncio.to_thread(avatars.page, platform, principal.tenant, limit, after, order == "desc")


@router.get("/avatars/{avatar_id}", summary="Retrieve an avatar", response_model=Avatar)
async def get_avatar(
    avatar_id: str, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> dict[str, Any]:
    return avatars.public(await asyncio.to_thread(avatars.get, platform, principal.tenant, avatar_id))


@router.get("/avatars/{avatar_id}/portrait", summary="An avatar's portrait image")
async def get_portrait(
    avatar_id: str, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> Response:
    data, content_type = await asyncio.to_thread(avatars.portrait, platform, principal.tenant, avatar_id)
    return Response(content=data, media_type=content_type)


@router.post("/avatars/{avatar_id}", summary="Update an avatar (only the fields sent)", response_model=Avatar)
@router.patch("/avatars/{avatar_id}", summary="Update an avatar (only the fields sent)", response_model=Avatar)
async def update_avatar(
    avatar_id: str,
    body: AvatarFields,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    avatar = await asyncio.to_thread(avatars.get, platform, principal.tenant, avatar_id)
    await check_voice(platform, body.voice)
    portrait = await make_portrait(platform, principal, body)
    sent = body.model_dump(exclude_unset=True, exclude={"portrait", "portrait_prompt"})
    if sent.get("name") is None and "name" in sent:
        raise invalid("name", "cannot be null", 422)
    avatar.update(sent)
    avatar["instructions"] = avatar.get("instructions") or ""
    return await asyncio.to_thread(avatars.save, platform, principal.tenant, avatar, portrait)


@router.delete("/avatars/{avatar_id}", summary="Delete an avatar")
async def delete_avatar(
    avatar_id: str, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> dict[str, Any]:
    await asyncio.to_thread(avatars.delete, platform, principal.tenant, avatar_id)
    return {"id": avatar_id, "object": "avatar.deleted", "deleted": True}
