"""`POST /v1/realtime/calls`: a WebRTC call made with aiortc as the client, in-process. The client
speaks a question on its audio track (Opus), reads the events on the `oai-events` data channel,
and hears the answer on the track the platform sends back. ICE stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from fastapi.testclient import TestClient

from serve_app.realtime.audio import WIRE_RATE, pcm_of
from serve_app.realtime.webrtc import CALLS, PcmTrack
from tests.ingress.conftest import InProcessPlatform

CALL_TIMEOUT_S = 120.0


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host candidates on 127.0.0.1 only, on both ends (aioice leaves loopback out by default)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


async def call(app: Any, headers: dict[str, str], question: bytes) -> tuple[list[dict[str, Any]], int, str]:
    """Make a call, say `question` (pcm16 24 kHz), and collect the events until `response.done`;
    with the loudest sample heard on the platform's track, and the call's URL."""
    pc = RTCPeerConnection()
    events: list[dict[str, Any]] = []
    done = asyncio.Event()
    channel = pc.createDataChannel("oai-events")

    def on_message(text: str) -> None:
        events.append(json.loads(text))
        if events[-1]["type"] == "response.done":
            done.set()

    channel.on("message", on_message)
    microphone = PcmTrack()
    pc.addTrack(microphone)
    loudest = [0]

    async def listen(track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            peak = int(abs(frame.to_ndarray()).max()) if frame.samples else 0
            loudest[0] = max(loudest[0], peak)

    pc.on("track", lambda track: asyncio.ensure_future(listen(track)))
    await pc.setLocalDescription(await pc.createOffer())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://platform") as client:
        answer = await client.post(
            "/v1/realtime/calls?model=llm",
            content=pc.localDescription.sdp,
            headers={**headers, "Content-Type": "application/sdp"},
        )
        assert answer.status_code == 201, answer.text
        assert answer.headers["content-type"].startswith("application/sdp")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
        while channel.readyState != "open":
            await asyncio.sleep(0.05)
        channel.send(json.dumps({"type": "session.update", "session": {"max_output_tokens": 30}}))
        microphone.write(b"\x00\x00" * int(WIRE_RATE * 0.3) + question + b"\x00\x00" * int(WIRE_RATE * 1.5))
        await asyncio.wait_for(done.wait(), CALL_TIMEOUT_S)
        await asyncio.sleep(1.0)  # the answer's first second, played on the track
        hangup = await client.post(f"{answer.headers['location']}/hangup", headers=headers)
        assert hangup.status_code == 200
    await pc.close()
    return events, loudest[0], answer.headers["location"]


def test_a_call_over_webrtc(
    http: TestClient, user: dict[str, str], ingress: InProcessPlatform, real_voice: None
) -> None:
    speech = http.post(
        "/v1/audio/speech",
        json={"model": "tts", "input": "What color is the sky on a sunny day?", "response_format": "wav"},
        headers=user,
    )
    question = pcm_of(speech.content, WIRE_RATE)
    events, loudest, location = http.portal.call(call, ingress.app, user, question)
    types = [e["type"] for e in events]
    assert types[0] == "session.created"
    for expected in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.input_audio_transcription.completed",
        "response.output_audio_transcript.delta",
        "response.done",
    ):
        assert expected in types, types
    assert "response.output_audio.delta" not in types  # the audio goes on the track, not the channel
    transcript = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    # Whisper tiny sometimes hears "the sky" as "this guy": most of the words, not each, must come through.
    assert len(set(transcript["transcript"].lower().replace("?", "").split()) & {"color", "sky", "sunny", "day"}) >= 2
    assert events[-1]["response"]["status"] == "completed"
    assert loudest > 1000  # speech, not silence, came back on the track
    assert location.rsplit("/", 1)[-1] not in CALLS  # hung up


def test_a_call_needs_auth_and_an_sdp_offer(http: TestClient, user: dict[str, str]) -> None:
    assert (
        http.post("/v1/realtime/calls", content="v=0", headers={"Content-Type": "application/sdp"}).status_code == 401
    )
    assert http.post("/v1/realtime/calls", content="v=0", headers=user).status_code == 415
    bad = http.post("/v1/realtime/calls", content="not sdp", headers={**user, "Content-Type": "application/sdp"})
    assert bad.status_code == 400
    assert http.post("/v1/realtime/calls/rtc_nope/hangup", headers=user).status_code == 404
