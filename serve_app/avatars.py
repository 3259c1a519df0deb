"""Avatars: a tenant's personas for realtime sessions and chats.

An avatar is a document of the state store (namespace `avatars`, key `<tenant>/<id>`), listed
newest first through an index per tenant; its portrait is an artifact under
`+avatars/t-<tenant>/<id>` (tenant ids never contain `+`, so no key meets a workflow's artifacts).
Every function here blocks: call it in a thread.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from serve_app.errors import not_found
from serve_app.files import cursor_page
from serve_app.platform import Platform
from state.store import IndexEntry

AVATARS = "avatars"
AVATAR_ID = re.compile(r"^avatar_[A-Za-z0-9]{1,64}$")
# OpenAI's voice names: accepted, and spoken with the tts backend's default voice (as /v1/audio/speech does).
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


class AvatarFields(BaseModel):
    """What a client sets on an avatar; on an update, only the fields it sends change."""

    name: str | None = Field(None, min_length=1, max_length=128)
    instructions: str | None = Field(None, max_length=16_384, description="The persona: the session's system prompt.")
    voice: str | None = Field(
        None, max_length=128, description="A voice the tts backends list, or an OpenAI voice name."
    )
    greeting: str | None = Field(None, max_length=2_048, description="What the avatar says first.")
    portrait: str | None = Field(
        None, description="A PNG or JPEG image as a data URL (`data:image/png;base64,...`) or plain base64."
    )
    portrait_prompt: str | None = Field(
        None,
        max_length=2_048,
        description="A description that `text2pic` makes the portrait from (instead of `portrait`).",
    )


class AvatarCreate(AvatarFields):
    name: str = Field(..., min_length=1, max_length=128)


class PortraitInfo(BaseModel):
    content_type: str
    bytes: int
    url: str
    prompt: str | None = None


class Avatar(BaseModel):
    """An avatar as the API shows it."""

    id: str
    object: str = "avatar"
    created_at: int
    updated_at: int
    name: str
    instructions: str
    voice: str | None
    greeting: str | None
    portrait: PortraitInfo | None


class AvatarList(BaseModel):
    object: str = "list"
    data: list[Avatar]
    first_id: str | None
    last_id: str | None
    has_more: bool


def new_avatar_id() -> str:
    return f"avatar_{uuid.uuid4().hex}"


def portrait_key(tenant: str, avatar_id: str) -> str:
    return f"+avatars/t-{quote(tenant, safe='')}/{avatar_id}"


def list_index(tenant: str) -> str:
    return f"avatars/{quote(tenant, safe='')}"


def _entry(tenant: str, avatar: dict[str, Any]) -> IndexEntry:
    return IndexEntry(f"{tenant}/{avatar['id']}", {list_index(tenant): float(avatar["created_at_s"])})


def public(avatar: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in avatar.items() if k != "created_at_s"}


def get(platform: Platform, tenant: str, avatar_id: str) -> dict[str, Any]:
    """The tenant's avatar document; 404 for one that is missing or another tenant's."""
    avatar = platform.store.get(AVATARS, f"{tenant}/{avatar_id}") if AVATAR_ID.match(avatar_id) else None
    if avatar is None:
        raise not_found(f"avatar {avatar_id!r}")
    return avatar


def save(
    platform: Platform,
    tenant: str,
    avatar: dict[str, Any],
    portrait: tuple[bytes, str, str | None] | None,
) -> dict[str, Any]:
    """Store an avatar (new or updated) and, when given, its portrait `(bytes, content_type, prompt)`."""
    if portrait is not None:
        data, content_type, prompt = portrait
        platform.workflows.artifacts.put(portrait_key(tenant, avatar["id"]), data, content_type)
        url = f"/v1/avatars/{avatar['id']}/portrait"
        avatar["portrait"] = {"content_type": content_type, "bytes": len(data), "url": url, "prompt": prompt}
    avatar["updated_at"] = int(time.time())
    platform.store.put(AVATARS, f"{tenant}/{avatar['id']}", avatar, _entry(tenant, avatar))
    return public(avatar)


def new(fields: AvatarCreate) -> dict[str, Any]:
    now = time.time()
    return {
        "id": new_avatar_id(),
        "object": "avatar",
        "created_at": int(now),
        "created_at_s": now,
        "updated_at": int(now),
        "name": fields.name,
        "instructions": fields.instructions or "",
        "voice": fields.voice,
        "greeting": fields.greeting,
        "portrait": None,
    }


def portrait(platform: Platform, tenant: str, avatar_id: str) -> tuple[bytes, str]:
    avatar = get(platform, tenant, avatar_id)
    if not avatar.get("portrait"):
        raise not_found(f"the portrait of avatar {avatar_id!r}")
    return platform.workflows.artifacts.get(portrait_key(tenant, avatar_id))


def delete(platform: Platform, tenant: str, avatar_id: str) -> None:
    avatar = get(platform, tenant, avatar_id)
    if avatar.get("portrait"):
        platform.workflows.artifacts.delete(portrait_key(tenant, avatar_id))
    platform.store.delete(AVATARS, f"{tenant}/{avatar_id}", _entry(tenant, avatar))


def page(platform: Platform, tenant: str, limit: int, after: str | None, newest_first: bool) -> dict[str, Any]:
    """One page of the tenant's avatars after the avatar `after` (OpenAI's cursor)."""
    return cursor_page(platform, AVATARS, list_index(tenant), tenant, limit, after, newest_first, public)
