"""Audio formats at the door: speech in each of OpenAI's formats, transcription uploads in each
compressed format, the transcript's answer formats, and the fields that are refused (a 4xx naming
the field), never ignored. The models are canned: tests/deployments/ and the Ray HTTP test
(tests/serve_app/test_http_audio_formats.py) run the real ones."""

from __future__ import annotations

import io
from typing import Any

import av
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deployments import media
from tests.ingress.standins import silent_wav, tiny_png
from tests.serve_app.contract import assert_error

SPEECH = {"model": "tts", "input": "Hello.", "voice": "alloy"}
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def seconds(data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return len(data) / 2 / media.PCM_RATE
    with av.open(io.BytesIO(data), "r") as container:
        frames = list(container.decode(audio=0))
        return sum(frame.samples for frame in frames) / frames[0].sample_rate


def transcribe(http: TestClient, user: dict[str, str], data: bytes, **form: Any) -> Any:
    return http.post("/v1/audio/transcriptions", files={"file": ("x", data)}, data=form, headers=user)


# ---------------------------------------------------------------- speech


@pytest.mark.parametrize("fmt", CONTENT_TYPES)
def test_speech_in_each_format(http: TestClient, user: dict[str, str], fmt: str) -> None:
    response = http.post("/v1/audio/speech", json={**SPEECH, "response_format": fmt}, headers=user)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPES[fmt]
    assert seconds(response.content, fmt) == pytest.approx(0.5, abs=0.05)  # the canned voice's silence


def test_speech_is_mp3_by_default_as_openai(http: TestClient, user: dict[str, str]) -> None:
    response = http.post("/v1/audio/speech", json=SPEECH, headers=user)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    assert media.media_type(response.content) == "audio/mpeg"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("response_format", "ogg"),
        ("speed", 4.5),
        ("speed", 0.2),
        ("instructions", "Speak cheerfully."),
        ("stream_format", "sse"),
    ],
)
def test_speech_fields_that_would_change_the_answer_are_refused(
    http: TestClient, user: dict[str, str], field: str, value: Any
) -> None:
    error = assert_error(http.post("/v1/audio/speech", json={**SPEECH, field: value}, headers=user), 422)
    assert [detail["field"] for detail in error["details"]] == [field]


# ---------------------------------------------------------------- transcription inputs


def tone_wav() -> bytes:
    """Half a second of a tone, at Piper's rate."""
    return media.wav_bytes(bytes(range(0, 200, 2)) * 220, 22_050)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_compressed_uploads_are_transcribed(http: TestClient, user: dict[str, str], fmt: str) -> None:
    upload, _ = media.encode_audio(tone_wav(), fmt)

    response = transcribe(http, user, upload)

    assert response.status_code == 200, response.text
    assert response.json()["text"] == "canned answer"


def silent_video() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as output:
        stream = output.add_stream("libvpx-vp9", rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        output.mux(stream.encode(av.VideoFrame.from_image(Image.new("RGB", (16, 16)))))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def test_uploads_that_are_not_audio_are_415(http: TestClient, user: dict[str, str]) -> None:
    for upload in (tiny_png(), silent_video(), b"%PDF-1.7\n" + b"x" * 100):
        error = assert_error(transcribe(http, user, upload), 415, "unsupported_media_type")
        assert error["details"][0]["field"] == "file"


@pytest.mark.parametrize(
    "upload",
    [b"ID3\x03" + b"\x00" * 100, b"OggS" + bytes(range(256)), b"plain text, not audio" * 5],
    ids=["mp3 tag and nothing", "ogg page of noise", "text"],
)
def test_malformed_audio_is_400(http: TestClient, user: dict[str, str], upload: bytes) -> None:
    error = assert_error(transcribe(http, user, upload), 400, "invalid_media")
    assert error["details"][0]["field"] == "file"


# ---------------------------------------------------------------- transcription answers


def test_transcript_as_subtitles(http: TestClient, user: dict[str, str]) -> None:
    # The canned backend times nothing: one cue spans the audio.
    srt = transcribe(http, user, silent_wav(), response_format="srt")
    vtt = transcribe(http, user, silent_wav(), response_format="vtt")

    assert srt.status_code == vtt.status_code == 200
    assert srt.headers["content-type"].startswith("text/plain")
    assert srt.text == "1\n00:00:00,000 --> 00:00:00,500\ncanned answer\n"
    assert vtt.text == "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\ncanned answer\n"


def test_verbose_json(http: TestClient, user: dict[str, str]) -> None:
    body = transcribe(http, user, silent_wav(), response_format="verbose_json").json()

    assert (body["text"], body["language"], body["duration"]) == ("canned answer", "en", 0.5)
    assert body["segments"] == [{"id": 0, "start": 0.0, "end": 0.5, "text": "canned answer"}]
    assert "words" not in body


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"response_format": "xml"}, "response_format"),
        ({"temperature": "1.5"}, "temperature"),
        ({"timestamp_granularities[]": "character", "response_format": "verbose_json"}, "timestamp_granularities"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),  # only with verbose_json
        ({"stream": "true"}, "stream"),
        ({"include[]": "logprobs"}, "include"),
    ],
)
def test_transcription_fields_that_would_change_the_answer_are_refused(
    http: TestClient, user: dict[str, str], form: dict[str, str], field: str
) -> None:
    error = assert_error(transcribe(http, user, silent_wav(), **form), 422, "validation_error")
    assert [detail["field"] for detail in error["details"]] == [field]
