"""`/v1/realtime` in-process: the WebSocket's handshake and events, with real models where the
test speaks (Piper makes the question, silero-vad hears it, Whisper transcribes it, SmolLM2
answers and Piper speaks the answer)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from serve_app.realtime import secrets
from serve_app.realtime.audio import WIRE_RATE, pcm_of
from tests.conftest import make_token
from tests.ingress.conftest import InProcessPlatform, bearer

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CHUNK_BYTES = WIRE_RATE // 10 * 2  # 100 ms of pcm16
EVENT_TIMEOUT_S = 90.0
CALL_TIMEOUT_S = 60.0


def receive(ws: WebSocketTestSession, timeout_s: float = EVENT_TIMEOUT_S) -> dict[str, Any]:
    """The next server event, or a failure after `timeout_s` (never a hung test)."""

    async def next_message() -> Any:
        with anyio.fail_after(timeout_s):
            return await ws._send_rx.receive()

    message = ws.portal.call(next_message)
    assert message["type"] == "websocket.send", message
    event: dict[str, Any] = json.loads(message["text"])
    SERVER_EVENT.validate_python(event)  # the shape the official client reads
    return event


def receive_until(
    ws: WebSocketTestSession, event_type: str, seen: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    while True:
        event = receive(ws)
        if seen is not None:
            seen.append(event)
        if event["type"] == event_type:
            return event


@contextmanager
def session(http: TestClient, headers: dict[str, str], query: str = "") -> Iterator[WebSocketTestSession]:
    with http.websocket_connect(f"/v1/realtime?model=llm{query}", headers=headers) as ws:
        assert receive(ws)["type"] == "session.created"
        yield ws


def send(ws: WebSocketTestSession, event_type: str, **fields: Any) -> None:
    ws.send_text(json.dumps({"type": event_type, **fields}))


def spoken(http: TestClient, user: dict[str, str], text: str) -> bytes:
    """`text` spoken by the platform's own tts, as pcm16 at 24 kHz."""
    answer = http.post("/v1/audio/speech", json={"model": "tts", "input": text, "response_format": "wav"}, headers=user)
    assert answer.status_code == 200, answer.text
    return pcm_of(answer.content, WIRE_RATE)


def silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(WIRE_RATE * seconds)


def append_audio(ws: WebSocketTestSession, pcm: bytes) -> None:
    for offset in range(0, len(pcm), CHUNK_BYTES):
        send(ws, "input_audio_buffer.append", audio=base64.b64encode(pcm[offset : offset + CHUNK_BYTES]).decode())


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def wav(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WIRE_RATE)
        out.writeframes(pcm)
    return buffer.getvalue()


def test_a_spoken_question_gets_a_spoken_answer(http: TestClient, user: dict[str, str], real_voice: None) -> None:
    question = spoken(http, user, "What color is the sky on a sunny day?")
    with session(http, user) as ws:
        send(ws, "session.update", session={"type": "realtime", "max_output_tokens": 40})
        assert receive_until(ws, "session.updated")["session"]["max_output_tokens"] == 40
        append_audio(ws, silence(0.5) + question + silence(1.5))
        events: list[dict[str, Any]] = []
        done = receive_until(ws, "response.done", events)

    types = [e["type"] for e in events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.done",
    ]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types
    transcription = events[types.index("conversation.item.input_audio_transcription.completed")]
    # Piper's speech varies a little from run to run, and so does tiny Whisper's hearing of it.
    assert len(words(transcription["transcript"]) & {"color", "colors", "sky", "sunny", "day"}) >= 3

    assert done["response"]["status"] == "completed"
    assert done["response"]["usage"]["output_tokens"] > 0
    answer = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta").strip()
    assert answer and done["response"]["output"][0]["content"][0]["transcript"] == answer
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert len(audio) > WIRE_RATE  # more than half a second of speech
    # What the answer's audio says is what its transcript says.
    heard = http.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(audio), "audio/wav")}, headers=user)
    overlap = words(heard.json()["text"]) & words(answer)
    assert len(overlap) >= len(words(answer)) // 2, (heard.json()["text"], answer)


def test_a_text_only_session(
    http: TestClient, user: dict[str, str], ingress: InProcessPlatform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = ingress.platform.scheduler
    granted: list[tuple[str, str, str]] = []
    real_grant = scheduler.grant

    async def grant(service: str, who: str, estimate: float, priority: str, *args: Any) -> Any:
        granted.append((service, who, priority))
        return await real_grant(service, who, estimate, priority, *args)

    monkeypatch.setattr(scheduler, "grant", grant)
    with session(http, user) as ws:
        update = {"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
        send(ws, "session.update", session=update)
        updated = receive_until(ws, "session.updated")["session"]
        assert updated["output_modalities"] == ["text"] and updated["audio"]["input"]["turn_detection"] is None
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
        send(ws, "conversation.item.create", item=item)
        assert receive_until(ws, "conversation.item.added")["item"]["content"][0]["text"] == "Say hello."
        send(ws, "response.create", response={"max_output_tokens": 16})
        events: list[dict[str, Any]] = []
        done = receive_until(ws, "response.done", events)
    types = [e["type"] for e in events]
    assert "response.created" in types and "response.output_text.delta" in types
    assert not any(t.startswith("response.output_audio") for t in types)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta").strip()
    assert done["response"]["status"] == "completed" and done["response"]["output_modalities"] == ["text"]
    assert done["response"]["output"][0]["content"][0] == {"type": "output_text", "text": text}
    # The session's model calls wait in the fair queue at the tenant's `critical` priority.
    assert [g for g in granted if g[1] == tenant] == [("llm", tenant, "critical")]


def test_manual_commit_without_turn_detection(http: TestClient, user: dict[str, str], real_voice: None) -> None:
    question = spoken(http, user, "Name a color.")
    with session(http, user) as ws:
        send(
            ws, "session.update", session={"audio": {"input": {"turn_detection": None}}, "output_modalities": ["text"]}
        )
        receive_until(ws, "session.updated")
        send(ws, "input_audio_buffer.commit")
        assert receive_until(ws, "error")["error"]["code"] == "input_audio_buffer_commit_empty"
        append_audio(ws, question)
        send(ws, "input_audio_buffer.commit")
        committed = receive_until(ws, "input_audio_buffer.committed")
        send(ws, "response.create", response={"max_output_tokens": 12})
        events: list[dict[str, Any]] = []
        done = receive_until(ws, "response.done", events)
    types = [e["type"] for e in events]
    assert "input_audio_buffer.speech_started" not in types
    transcription = events[types.index("conversation.item.input_audio_transcription.completed")]
    assert transcription["item_id"] == committed["item_id"]
    assert any(word.startswith("colo") for word in words(transcription["transcript"]))
    assert types.index("conversation.item.input_audio_transcription.completed") < types.index("response.created")
    assert done["response"]["status"] == "completed"


def test_barge_in_cancels_the_answer(http: TestClient, user: dict[str, str], real_voice: None) -> None:
    question = spoken(http, user, "Tell me a long story about a dragon.")
    interruption = spoken(http, user, "Stop, please.")
    with session(http, user) as ws:
        instructions = "You are a storyteller. Always answer with a very long story of many sentences."
        send(ws, "session.update", session={"instructions": instructions, "max_output_tokens": 400})
        receive_until(ws, "session.updated")
        append_audio(ws, silence(0.3) + question + silence(1.2))
        events: list[dict[str, Any]] = []
        first_audio = receive_until(ws, "response.output_audio.delta", events)
        append_audio(ws, interruption)
        done = receive_until(ws, "response.done", events)
        assert done["response"]["id"] == first_audio["response_id"]
    types = [e["type"] for e in events]
    interrupted_at = types.index("input_audio_buffer.speech_started", events.index(first_audio))
    assert interrupted_at < types.index("response.done")
    assert done["response"]["status"] == "cancelled"
    written = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    heard = done["response"]["output"][0]["content"][0]["transcript"]
    assert done["response"]["output"][0]["status"] == "incomplete"
    # The item keeps what was spoken before the interruption: the start of what was written.
    assert " ".join(written.split()).startswith(" ".join(heard.split()))


def test_response_cancel(http: TestClient, user: dict[str, str]) -> None:
    with session(http, user) as ws:
        send(ws, "response.cancel")
        assert receive_until(ws, "error")["error"]["code"] == "response_cancel_not_active"
        send(ws, "session.update", session={"output_modalities": ["text"]})
        receive_until(ws, "session.updated")
        send(ws, "response.create")
        receive_until(ws, "response.created")
        send(ws, "response.cancel")
        assert receive_until(ws, "response.done")["response"]["status"] in ("cancelled", "completed")


def test_a_malformed_event_then_a_good_one(http: TestClient, user: dict[str, str]) -> None:
    with session(http, user) as ws:
        ws.send_text("{not json")
        assert receive(ws)["error"]["code"] == "invalid_json"
        send(ws, "no.such.event", event_id="evt_1")
        error = receive(ws)["error"]
        assert error["code"] == "unknown_event" and error["event_id"] == "evt_1"
        send(ws, "session.update", session={"output_modalities": ["video"]})
        assert receive(ws)["error"]["param"] == "session.output_modalities"
        send(ws, "input_audio_buffer.append", audio="***")
        assert receive(ws)["error"]["code"] == "invalid_value"
        send(ws, "conversation.item.create", item={"type": "message", "role": "user", "content": []})
        assert receive(ws)["error"]["param"] == "item.content"
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        send(ws, "conversation.item.create", item=item)
        assert receive(ws)["type"] == "conversation.item.added"


def refused(http: TestClient, url: str, **options: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as closed, http.websocket_connect(url, **options):
        pass
    return closed.value.code


def test_the_handshake_needs_a_valid_token(http: TestClient, user: dict[str, str], tenant: str) -> None:
    assert refused(http, "/v1/realtime") == 1008
    assert refused(http, "/v1/realtime", headers=bearer("not-a-token")) == 1008
    expired = make_token(tenant=tenant, sub="alice", ttl_s=-10)
    assert refused(http, "/v1/realtime", headers=bearer(expired)) == 1008
    assert refused(http, "/v1/realtime?model=no-such-model", headers=user) == 1008
    # Browsers send the key as a subprotocol.
    token = user["Authorization"].removeprefix("Bearer ")
    protocols = ["realtime", f"openai-insecure-api-key.{token}"]
    with http.websocket_connect("/v1/realtime", subprotocols=protocols) as ws:
        assert ws.accepted_subprotocol == "realtime"
        assert receive(ws)["type"] == "session.created"


def test_client_secrets(http: TestClient, user: dict[str, str], ingress: InProcessPlatform, tenant: str) -> None:
    body = {"expires_after": {"anchor": "created_at", "seconds": 60}, "session": {"instructions": "Be brief."}}
    issued = http.post("/v1/realtime/client_secrets", json=body, headers=user)
    assert issued.status_code == 200, issued.text
    secret = issued.json()
    assert secret["value"].startswith("ek_") and secret["expires_at"] > time.time()
    with http.websocket_connect("/v1/realtime", headers=bearer(secret["value"])) as ws:
        assert receive(ws)["session"]["instructions"] == "Be brief."
    bad = {"session": {"output_modalities": ["smell"]}}
    assert http.post("/v1/realtime/client_secrets", json=bad, headers=user).status_code == 422
    assert http.post("/v1/realtime/client_secrets", json={}).status_code == 401
    from serve_app.auth import Principal, Role

    stale, _ = secrets.issue(ingress.platform.store, Principal("alice", tenant, Role.USER), -1, {})
    assert refused(http, "/v1/realtime", headers=bearer(stale)) == 1008
    assert refused(http, "/v1/realtime", headers=bearer("ek_made_up")) == 1008


def test_an_avatar_sets_the_persona(http: TestClient, user: dict[str, str]) -> None:
    body = {"name": "Tutor", "instructions": "You are a patient math tutor.", "greeting": "Ready for math?"}
    avatar_id = http.post("/v1/avatars", json=body, headers=user).json()["id"]
    with http.websocket_connect(f"/v1/realtime?avatar={avatar_id}", headers=user) as ws:
        created = receive(ws)
        assert created["session"]["instructions"] == "You are a patient math tutor."
        greeting = receive(ws)
        assert greeting["type"] == "conversation.item.added"
        assert greeting["item"]["content"][0]["text"] == "Ready for math?"
    other = bearer(make_token(tenant="another-tenant", sub="mallory"))
    assert refused(http, f"/v1/realtime?avatar={avatar_id}", headers=other) == 1008
    assert refused(http, "/v1/realtime?avatar=avatar_nope", headers=user) == 1008


@pytest.fixture()
def granted(ingress: InProcessPlatform, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """The scheduler's grants during the test: (service, tenant, priority)."""
    scheduler = ingress.platform.scheduler
    grants: list[tuple[str, str, str]] = []
    real_grant = scheduler.grant

    async def grant(service: str, who: str, estimate: float, priority: str, *args: Any) -> Any:
        grants.append((service, who, priority))
        return await real_grant(service, who, estimate, priority, *args)

    monkeypatch.setattr(scheduler, "grant", grant)
    return grants


def test_the_answer_is_prepared_in_the_pause(
    http: TestClient, user: dict[str, str], tenant: str, real_voice: None, granted: list[tuple[str, str, str]]
) -> None:
    # Mid-sentence pauses (the commas) are shorter than the silence window: the turn is the whole
    # sentence, answered once, and what was prepared in those pauses leaves no trace.
    question = spoken(http, user, "Well, I think, maybe, the sky is blue. What color is the sky?")
    with session(http, user) as ws:
        send(ws, "session.update", session={"type": "realtime", "max_output_tokens": 24})
        receive_until(ws, "session.updated")
        append_audio(ws, silence(0.3) + question + silence(1.5))
        events: list[dict[str, Any]] = []
        done = receive_until(ws, "response.done", events)
        send(ws, "conversation.item.create", item={"type": "message", "role": "user", "content": []})
        assert receive(ws)["type"] == "error"  # nothing else came in between: no second answer
    types = [e["type"] for e in events]
    for once in (
        "input_audio_buffer.speech_stopped",
        "response.created",
        "conversation.item.input_audio_transcription.completed",
    ):
        assert types.count(once) == 1, types
    transcript = next(e["transcript"] for e in events if e["type"].endswith("transcription.completed"))
    assert {"well", "blue", "sky"} <= words(transcript), transcript
    assert done["response"]["status"] == "completed"
    item_ids = [e["item"]["id"] for e in events if e["type"] == "conversation.item.added"]
    assert done["response"]["output"][0]["id"] == item_ids[-1]  # the answer follows the question
    # Transcriptions were made in the pauses (at least one dropped, then the one that stood).
    assert granted.count(("stt", tenant, "critical")) >= 2


def test_a_turn_is_transcribed_once(
    http: TestClient, user: dict[str, str], tenant: str, real_voice: None, granted: list[tuple[str, str, str]]
) -> None:
    # No pause in the question: the transcription and answer made during the silence window are
    # the turn's own, not made again once the VAD is sure.
    question = spoken(http, user, "Name a color.")
    with session(http, user) as ws:
        send(ws, "session.update", session={"type": "realtime", "max_output_tokens": 12})
        receive_until(ws, "session.updated")
        append_audio(ws, silence(0.3) + question + silence(1.0))
        events: list[dict[str, Any]] = []
        done = receive_until(ws, "response.done", events)
    types = [e["type"] for e in events]
    transcribed = types.index("conversation.item.input_audio_transcription.completed")
    assert types.index("input_audio_buffer.committed") < transcribed < types.index("response.created")
    assert done["response"]["status"] == "completed"
    assert [g[0] for g in granted if g[1] == tenant].count("stt") == 1
    assert [g[0] for g in granted if g[1] == tenant].count("llm") == 1


def test_session_update_names_an_avatar(http: TestClient, user: dict[str, str]) -> None:
    body = {"name": "Pirate", "instructions": "You are a pirate.", "greeting": "Ahoy!"}
    avatar_id = http.post("/v1/avatars", json=body, headers=user).json()["id"]
    other_user = bearer(make_token(tenant="another-tenant-rt", sub="mallory"))
    others = http.post("/v1/avatars", json={"name": "Theirs"}, headers=other_user).json()["id"]
    with session(http, user) as ws:
        send(ws, "session.update", session={"type": "realtime", "avatar": avatar_id})
        updated = receive(ws)["session"]
        assert (updated["avatar"], updated["instructions"]) == (avatar_id, "You are a pirate.")
        greeting = receive(ws)
        assert greeting["type"] == "conversation.item.added" and greeting["item"]["content"][0]["text"] == "Ahoy!"
        receive_until(ws, "conversation.item.done")
        # Another tenant's avatar is refused like a missing one, and nothing changes.
        send(ws, "session.update", session={"avatar": others, "instructions": "Be someone else."}, event_id="e1")
        error = receive(ws)["error"]
        assert (error["code"], error["param"], error["event_id"]) == ("not_found", "session.avatar", "e1")
        send(ws, "session.update", session={"instructions": "Be a brief pirate."})
        updated = receive(ws)["session"]
        assert (updated["avatar"], updated["instructions"]) == (avatar_id, "Be a brief pirate.")


def test_a_call_offered_as_a_multipart_form(
    http: TestClient, user: dict[str, str], ingress: InProcessPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official client's `realtime.calls.create(sdp=..., session=...)` sends a multipart form;
    the session it names (an avatar, instructions) is the call's, as `session.created` shows."""
    import aioice.ice
    import httpx
    import openai
    from aiortc import RTCPeerConnection, RTCSessionDescription

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    avatar_id = http.post("/v1/avatars", json={"name": "Owl", "voice": "joe"}, headers=user).json()["id"]
    token = user["Authorization"].removeprefix("Bearer ")

    async def call() -> tuple[dict[str, Any], int]:
        pc = RTCPeerConnection()
        channel = pc.createDataChannel("oai-events")
        first: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        channel.on("message", lambda text: first.done() or first.set_result(json.loads(text)))
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        transport = httpx.ASGITransport(app=ingress.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://platform/v1") as raw:
            client = openai.AsyncOpenAI(api_key=token, base_url="http://platform/v1", http_client=raw)
            session = {"type": "realtime", "instructions": "You are a wise owl.", "avatar": avatar_id}
            answer = await client.realtime.calls.with_raw_response.create(sdp=pc.localDescription.sdp, session=session)
            assert answer.http_request.headers["content-type"].startswith("multipart/form-data")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
            created = await asyncio.wait_for(first, CALL_TIMEOUT_S)
            hangup = await raw.post(f"{answer.headers['location'].removeprefix('/v1')}/hangup", headers=user)
        await pc.close()
        return created, hangup.status_code

    created, hung_up = http.portal.call(call)
    assert created["type"] == "session.created"
    assert created["session"]["instructions"] == "You are a wise owl."  # the session's field wins
    assert (created["session"]["avatar"], created["session"]["audio"]["output"]["voice"]) == (avatar_id, "joe")
    assert hung_up == 200
    # A form without an offer, or with a session that is not JSON, is refused.
    form = {"sdp": (None, "", "application/sdp"), "session": (None, "{}", "application/json")}
    assert http.post("/v1/realtime/calls", files=form, headers=user).status_code == 400
    form = {"sdp": (None, "v=0", "application/sdp"), "session": (None, "{oops", "application/json")}
    refused = http.post("/v1/realtime/calls", files=form, headers=user)
    assert refused.status_code == 400 and "session" in refused.text


def test_a_failing_model_fails_the_turn_once(
    http: TestClient, user: dict[str, str], real_voice: None, swap_handle: Any
) -> None:
    # The answer prepared in the pause fails: the turn is answered `failed`, once, with its error.
    from tests.ingress.conftest import scripted_handle

    question = spoken(http, user, "What color is the sky?")
    swap_handle("llm", scripted_handle("llm", behaviour="fail"))
    with session(http, user) as ws:
        append_audio(ws, silence(0.3) + question + silence(1.0))
        events: list[dict[str, Any]] = []
        done = receive_until(ws, "response.done", events)
        send(ws, "conversation.item.create", item={"type": "message", "role": "user", "content": []})
        assert receive(ws)["type"] == "error"  # nothing else came after the failed answer
    types = [e["type"] for e in events]
    assert types.count("response.created") == 1 and types.count("error") == 1, types
    assert types.index("conversation.item.input_audio_transcription.completed") < types.index("response.created")
    assert done["response"]["status"] == "failed"
