"""The realtime WebSocket through the Serve proxy, with the official client's `realtime.connect`:
a spoken question (made by the platform's own tts, sent at real-time pace) gets a spoken answer;
and a WebRTC call offered with the official client's `realtime.calls.create`."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
import wave
from typing import Any

import openai
import pytest

from tests.conftest import make_token
from tests.helpers import realtime_text_turn

pytestmark = pytest.mark.ray

RATE = 24_000
CHUNK_S = 0.1


def pcm16_24k(wav_bytes: bytes) -> bytes:
    from serve_app.realtime.audio import pcm_of

    return pcm_of(wav_bytes, RATE)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def client(platform_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant="realtime"), timeout=120)


def test_official_client_spoken_turn(client: openai.OpenAI) -> None:
    question = client.audio.speech.create(
        model="tts", voice="alloy", input="What color is the sky on a sunny day?", response_format="wav"
    ).content
    pcm = b"\x00\x00" * int(RATE * 0.3) + pcm16_24k(question) + b"\x00\x00" * int(RATE * 1.2)
    step = int(RATE * CHUNK_S) * 2
    with client.realtime.connect(model="llm") as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(session={"type": "realtime", "max_output_tokens": 40})
        for offset in range(0, len(pcm), step):
            connection.input_audio_buffer.append(audio=base64.b64encode(pcm[offset : offset + step]).decode())
            time.sleep(CHUNK_S)  # real-time pace
        types: list[str] = []
        transcript = ""
        audio = b""
        for event in connection:
            types.append(event.type)
            if event.type == "conversation.item.input_audio_transcription.completed":
                transcript = event.transcript
            elif event.type == "response.output_audio.delta":
                audio += base64.b64decode(event.delta)
            elif event.type == "response.done":
                done = event
                break
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.input_audio_transcription.completed",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.done",
    ]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types
    assert len(words(transcript) & {"color", "colors", "sky", "sunny", "day"}) >= 3, transcript
    assert done.response.status == "completed" and done.response.usage.output_tokens > 0
    assert len(audio) > RATE  # over half a second of speech
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(audio)
    heard = client.audio.transcriptions.create(model="stt", file=("answer.wav", buffer.getvalue(), "audio/wav"))
    answer = done.response.output[0].content[0].transcript
    assert len(words(heard.text) & words(answer)) >= len(words(answer)) // 2, (heard.text, answer)


def test_official_client_text_only(client: openai.OpenAI) -> None:
    assert realtime_text_turn(client, "Say hello.").strip()


def test_refused_without_a_valid_token(platform_url: str) -> None:
    bad = openai.OpenAI(base_url=f"{platform_url}/v1", api_key="not-a-token")
    with pytest.raises(Exception), bad.realtime.connect(model="llm") as connection:  # noqa: B017 (websockets' own error)
        connection.recv()


def test_official_client_names_an_avatar_and_offers_a_call(client: openai.OpenAI) -> None:
    """`session.update` names an avatar (its persona becomes the session's), and
    `realtime.calls.create(sdp=..., session=...)` (a multipart form) gets an SDP answer."""
    from aiortc import RTCPeerConnection

    avatar = client.post(
        "/avatars", body={"name": "Tutor", "instructions": "You are a patient tutor."}, cast_to=dict[str, Any]
    )
    with client.realtime.connect(model="llm") as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(session={"type": "realtime", "avatar": avatar["id"]})
        updated = connection.recv()
        assert updated.type == "session.updated"
        assert updated.session.instructions == "You are a patient tutor."
        assert (updated.session.model_extra or {}).get("avatar") == avatar["id"]

    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.createDataChannel("oai-events")
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return str(sdp)

    session = {"type": "realtime", "instructions": "Be brief.", "avatar": avatar["id"]}
    answer = client.realtime.calls.with_raw_response.create(sdp=asyncio.run(offer()), session=session)
    assert answer.status_code == 201 and answer.headers["content-type"].startswith("application/sdp")
    assert answer.text.startswith("v=0") and "m=audio" in answer.text
    client.realtime.calls.hangup(answer.headers["location"].rsplit("/", 1)[-1])
