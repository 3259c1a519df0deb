"""`/v1/realtime`: the Realtime API's WebSocket, and the client secrets that browsers connect with.

Auth is checked at the handshake, before the connection is accepted (a refusal closes it with
1008, which an HTTP client sees as a 403): `Authorization: Bearer <JWT, API key or client
secret>`, or the `openai-insecure-api-key.<key>` subprotocol that browsers send. `?model=` names
the `llm` (a service or backend name; default `llm`), `?avatar=` one of the tenant's avatars,
whose instructions and voice the session starts with (a session can also name one in its
`avatar` field: in a client secret's session, a call's, or `session.update`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketState

from common.errors import PlatformError
from serve_app.auth import Principal, bearer_token, unauthorized
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError, not_found
from serve_app.openai_format import invalid
from serve_app.platform import Platform
from serve_app.realtime import secrets, webrtc
from serve_app.realtime.session import (
    EventError,
    RealtimeSession,
    SessionConfig,
    avatar_named,
    configured,
    find_avatar,
)

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


async def caller(connection: HTTPConnection, platform: Platform) -> tuple[Principal, dict[str, Any] | None]:
    """Who connects, and the session config their client secret grants (None for another token);
    a `PlatformError` 401 refuses them."""
    token, _ = handshake_token(connection)
    if token.startswith(secrets.PREFIX):
        principal, granted = await asyncio.to_thread(secrets.verify, platform.store, token)
        return principal, granted
    return await platform.verify_token(token), None


async def open_session(
    connection: HTTPConnection,
    platform: Platform,
    principal: Principal,
    granted: dict[str, Any] | None,
    session: dict[str, Any] | None = None,
) -> tuple[SessionConfig, str, str | None]:
    """What the handshake (or a call's offer) decides for `principal` (with the session config
    its client secret `granted`): the session's config, the model and the greeting. Raises
    `PlatformError` (404, 422, ...) to refuse.

    The config is, in order: the avatar's persona (`?avatar=`, else the `avatar` a session names),
    the client secret's session, then `session` (a call's `session` field)."""
    model_name = connection.query_params.get("model") or (session or {}).get("model")
    model = await platform.resolve_model(model_name if isinstance(model_name, str) else None, ("llm",))
    avatar_id = connection.query_params.get("avatar") or avatar_named(session) or avatar_named(granted)
    avatar = await find_avatar(platform, principal.tenant, avatar_id) if avatar_id else None
    try:
        config = configured(SessionConfig(), granted, avatar)
    except EventError as exc:
        raise unauthorized(f"the client secret's session is invalid: {exc.message}") from None
    try:
        config = configured(config, session)
    except EventError as exc:
        raise invalid(exc.param or "session", exc.message, 422) from None
    return config, model, avatar.get("greeting") if avatar else None


@router.websocket("/realtime")
async def realtime(websocket: WebSocket, platform: Platform = Depends(get_platform)) -> None:
    """OpenAI's Realtime API over a WebSocket (see serve_app/realtime/session.py)."""
    try:
        principal, granted = await caller(websocket, platform)
        config, model, greeting = await open_session(websocket, platform, principal, granted)
    except PlatformError as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=f"{exc.code}: {exc.message}"[:120])
        return
    await websocket.accept(subprotocol=handshake_token(websocket)[1])
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
FORM = "multipart/form-data"
MAX_SDP_BYTES = 64 * 1024


async def read_offer(request: Request) -> tuple[str, dict[str, Any] | None]:
    """The call's SDP offer, and its session config: the body as `application/sdp`, or the
    `sdp` and `session` (JSON) fields of a `multipart/form-data` body, as OpenAI's client sends
    them when it sets the session."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    session: dict[str, Any] | None = None
    if content_type == SDP:
        offer = await request.body()
    elif content_type == FORM:
        async with request.form(max_files=2, max_fields=2, max_part_size=MAX_SDP_BYTES) as form:
            offer = await form_field(form.get("sdp"))
            raw_session = await form_field(form.get("session"))
        if raw_session.strip():
            try:
                session = json.loads(raw_session)
            except json.JSONDecodeError:
                raise invalid("session", "the session is not valid JSON") from None
            if not isinstance(session, dict):
                raise invalid("session", "the session is a JSON object")
    else:
        raise ApiError(415, "unsupported_media_type", f"the offer is sent as {SDP}, or as {FORM} fields")
    if not offer.strip() or len(offer) > MAX_SDP_BYTES:
        raise invalid("sdp", f"the offer is empty or over {MAX_SDP_BYTES} bytes")
    try:
        return offer.decode(), session
    except UnicodeDecodeError:
        raise invalid("sdp", "the offer is not UTF-8 text") from None


async def form_field(value: UploadFile | str | None) -> bytes:
    """A form field's bytes, whether it came as a value or as a file part."""
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    return await value.read(MAX_SDP_BYTES + 1)


@router.post(
    "/realtime/calls",
    summary="A realtime session over WebRTC: an SDP offer in, the SDP answer out",
    status_code=201,
    response_class=PlainTextResponse,
    responses={201: {"content": {SDP: {}}, "description": "The SDP answer; `Location` names the call"}},
)
async def create_call(request: Request, platform: Platform = Depends(get_platform)) -> PlainTextResponse:
    """The body is the offer (`application/sdp`), or the `sdp` and `session` fields of a
    multipart form (what OpenAI's `client.realtime.calls.create(sdp=..., session=...)` sends);
    `?model=` and `?avatar=` as for the WebSocket (or the session's `model` and `avatar`).
    The client opens the `oai-events` data channel for the events; audio flows as Opus both ways."""
    principal, granted = await caller(request, platform)  # before the body is read
    offer, session = await read_offer(request)
    config, model, greeting = await open_session(request, platform, principal, granted, session)
    try:
        call, answer = await webrtc.start_call(platform, principal, model, config, greeting, offer)
    except ValueError as exc:
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
