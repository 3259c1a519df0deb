"""`/v1/realtime`: the Realtime API's WebSocket, and the client secrets that browsers connect with.

Auth is checked at the handshake, before the connection is accepted (a refusal closes it with
1008, which an HTTP client sees as a 403): `Authorization: Bearer <JWT, API key or client
secret>`, or the `openai-insecure-api-key.<key>` subprotocol that browsers send. `?model=` names
the `llm` (a service or backend name; default `llm`), `?avatar=` one of the tenant's avatars,
whose instructions and voice the session starts with.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketState

from common.errors import PlatformError
from serve_app import avatars
from serve_app.auth import Principal, bearer_token, unauthorized
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES
from serve_app.openai_format import invalid
from serve_app.platform import Platform
from serve_app.realtime import secrets
from serve_app.realtime.session import EventError, RealtimeSession, SessionConfig

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)
log = logging.getLogger(__name__)

INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."
POLICY_VIOLATION = 1008


class ExpiresAfter(BaseModel):
    anchor: str = Field("created_at", pattern="^created_at$")
    seconds: int = Field(secrets.DEFAULT_TTL_S, ge=10, le=secrets.MAX_TTL_S)


class ClientSecretRequest(BaseModel):
    expires_after: ExpiresAfter = Field(
        default_factory=lambda: ExpiresAfter(anchor="created_at", seconds=secrets.DEFAULT_TTL_S)
    )
    session: dict[str, Any] | None = Field(
        None, description="A realtime session config (as `session.update` takes) the session starts with."
    )


class ClientSecret(BaseModel):
    value: str
    expires_at: int
    session: dict[str, Any]


@router.post("/realtime/client_secrets", summary="A short-lived key for a browser's realtime session")
async def create_client_secret(
    body: ClientSecretRequest,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> ClientSecret:
    session = body.session or {}
    try:
        SessionConfig().update(session)  # refuse a bad config now, not when the browser connects
    except EventError as exc:
        raise invalid(exc.param or "session", exc.message, 422) from None
    value, expires_at = await asyncio.to_thread(
        secrets.issue, platform.store, principal, body.expires_after.seconds, session
    )
    return ClientSecret(value=value, expires_at=expires_at, session={"type": "realtime", **session})


def handshake_token(websocket: WebSocket) -> tuple[str, str | None]:
    """The caller's token, and the subprotocol to accept (browsers offer `realtime` beside their key)."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    subprotocol = "realtime" if "realtime" in offered else None
    for protocol in offered:
        if protocol.startswith(INSECURE_KEY_PROTOCOL):
            return protocol.removeprefix(INSECURE_KEY_PROTOCOL), subprotocol
    return bearer_token(websocket.headers.get("authorization")), subprotocol


async def open_session(
    websocket: WebSocket, platform: Platform
) -> tuple[Principal, SessionConfig, str, str | None, str | None]:
    """Everything the handshake decides: who calls, the session's config, the model, the
    greeting, and the subprotocol. Raises `PlatformError` (401, 404, ...) to refuse."""
    token, subprotocol = handshake_token(websocket)
    config = SessionConfig()
    if token.startswith(secrets.PREFIX):
        principal, session = await asyncio.to_thread(secrets.verify, platform.store, token)
        try:
            config.update(session)
        except EventError as exc:
            raise unauthorized(f"the client secret's session is invalid: {exc.message}") from None
    else:
        principal = await platform.verify_token(token)
    model = await platform.resolve_model(websocket.query_params.get("model"), ("llm",))
    greeting = None
    avatar_id = websocket.query_params.get("avatar")
    if avatar_id:
        avatar = await asyncio.to_thread(avatars.get, platform, principal.tenant, avatar_id)
        config.avatar = avatar_id
        config.instructions = avatar.get("instructions") or config.instructions
        config.voice = avatar.get("voice") or config.voice
        greeting = avatar.get("greeting")
    return principal, config, model, greeting, subprotocol


@router.websocket("/realtime")
async def realtime(websocket: WebSocket, platform: Platform = Depends(get_platform)) -> None:
    """OpenAI's Realtime API over a WebSocket (see serve_app/realtime/session.py)."""
    try:
        principal, config, model, greeting, subprotocol = await open_session(websocket, platform)
    except PlatformError as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=f"{exc.code}: {exc.message}"[:120])
        return
    await websocket.accept(subprotocol=subprotocol)
    lock = asyncio.Lock()

    async def send(event: dict[str, Any]) -> None:
        async with lock:
            if websocket.application_state == WebSocketState.CONNECTED:
                await websocket.send_json(event)

    session = RealtimeSession(platform, principal, send, model, config)
    log.info("realtime session", extra={"tenant": principal.tenant, "service": "llm"})
    try:
        await session.start(greeting)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            await session.handle(message.get("text") or (message.get("bytes") or b"").decode(errors="replace"))
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()
