"""`/v1/realtime`: the Realtime API's WebSocket, and the client secrets that browsers connect with.

Auth is checked at the handshake, before the connection is accepted (a refusal closes it with
1008, which an HTTP client sees as a 403): `Authorization: Bearer <JWT, API key or client
secret>`, or the `openai-insecure-api-key.<key>` subprotocol that browsers send. `?model=` names
the `llm` (a service or backend name; default `llm`), `?avatar=` one of the tenant's avatars,
whose instructions and voice the session starts with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketState

from common.errors import PlatformError
from serve_app import avatars
from serve_app.auth import Principal, bearer_token, unauthorized
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError, not_found
from serve_app.openai_format import invalid
from serve_app.platform import Platform
from serve_app.realtime import secrets, webrtc
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


def handshake_token(connection: HTTPConnection) -> tuple[str, str | None]:
    """The caller's token, and the subprotocol to accept (browsers offer `realtime` beside their key)."""
    offered = [p.strip() for p in connection.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    subprotocol = "realtime" if "realtime" in offered else None
    for protocol in offered:
        if protocol.startswith(INSECURE_KEY_PROTOCOL):
            return protocol.removeprefix(INSECURE_KEY_PROTOCOL), subprotocol
    return bearer_token(connection.headers.get("authorization")), subprotocol


async def open_session(
    connection: HTTPConnection, platform: Platform
) -> tuple[Principal, SessionConfig, str, str | None, str | None]:
    """Everything the handshake (or a call's offer) decides: who calls, the session's config, the
    model, the greeting, and the subprotocol. Raises `PlatformError` (401, 404, ...) to refuse."""
    token, subprotocol = handshake_token(connection)
    config = SessionConfig()
    if token.startswith(secrets.PREFIX):
        principal, session = await asyncio.to_thread(secrets.verify, platform.store, token)
        try:
            config.update(session)
        except EventError as exc:
            raise unauthorized(f"the client secret's session is invalid: {exc.message}") from None
    else:
        principal = await platform.verify_token(token)
    model = await platform.resolve_model(connection.query_params.get("model"), ("llm",))
    greeting = None
    avatar_id = connection.query_params.get("avatar")
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
            if WebSocketState.DISCONNECTED in (websocket.client_state, websocket.application_state):
                return  # the client left: a cancelled response's last events go nowhere
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # it left meanwhile
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


SDP = "application/sdp"
MAX_SDP_BYTES = 64 * 1024


@router.post(
    "/realtime/calls",
    summary="A realtime session over WebRTC: an SDP offer in, the SDP answer out",
    status_code=201,
    response_class=PlainTextResponse,
    responses={201: {"content": {SDP: {}}, "description": "The SDP answer; `Location` names the call"}},
)
async def create_call(request: Request, platform: Platform = Depends(get_platform)) -> PlainTextResponse:
    """The body is the offer (`application/sdp`); `?model=` and `?avatar=` as for the WebSocket.
    The client opens the `oai-events` data channel for the events; audio flows as Opus both ways."""
    principal, config, model, greeting, _ = await open_session(request, platform)
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != SDP:
        raise ApiError(415, "unsupported_media_type", f"the offer is sent as {SDP}")
    body = await request.body()
    if not body.strip() or len(body) > MAX_SDP_BYTES:
        raise invalid("sdp", f"the offer is empty or over {MAX_SDP_BYTES} bytes")
    try:
        call, answer = await webrtc.start_call(platform, principal, model, config, greeting, body.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("sdp", f"the offer cannot be answered: {exc}") from None
    log.info("realtime call", extra={"tenant": principal.tenant, "service": "llm"})
    return PlainTextResponse(
        answer, status_code=201, media_type=SDP, headers={"Location": f"/v1/realtime/calls/{call.id}"}
    )


@router.post("/realtime/calls/{call_id}/hangup", summary="End a WebRTC call")
async def hangup(
    call_id: str, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> dict[str, Any]:
    call = webrtc.CALLS.get(call_id)
    if call is None or call.principal.tenant != principal.tenant:
        raise not_found(f"call {call_id!r}")
    await call.close()
    return {"id": call_id, "status": "ended"}
