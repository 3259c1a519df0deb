"""Audio formats through real HTTP, on the real models (Piper, Whisper), with the official `openai`
client: speech in each of OpenAI's formats decodes to the length the voice spoke, an mp3 of that
speech is transcribed back, and the transcript comes as well-formed SubRip and WebVTT."""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Iterator

import av
import httpx
import openai
import pytest

from deployments import media
from tests.conftest import make_token

pytestmark = pytest.mark.ray

SENTENCE = "the quick brown fox jumps over the lazy dog"
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
SRT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)$")
VTT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)$")


def client_of(platform_url: str, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant=tenant), timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def client(platform_url: str) -> openai.OpenAI:
    return client_of(platform_url)


@pytest.fixture(scope="module")
def mp3(client: openai.OpenAI) -> bytes:
    """The sentence, spoken in OpenAI's default format."""
    return client.audio.speech.create(model="tts", voice="alloy", input=SENTENCE).content


def decoded_seconds(data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return len(data) / 2 / media.PCM_RATE
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        assert stream.channels == 1
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def spoken_seconds(platform_url: str, tenant: str) -> float:
    """How long the voice spoke for the tenant's one speech call, as the platform metered it (the
    voice's own length: Piper's varies a little from call to call)."""
    headers = {"Authorization": f"Bearer {make_token(tenant=tenant)}"}
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=platform_url, headers=headers, timeout=30) as http:
        while True:  # usage is written off the call's path
            items = [i for i in http.get("/v1/usage").json()["items"] if i["service"] == "tts"]
            if items and items[0]["requests"] == 1:
                return float(items[0]["audio_seconds"])
            assert time.monotonic() < deadline, items
            time.sleep(0.3)


def words(text: str) -> set[str]:
    return {word.strip(".,!?").lower() for word in text.split()}


# ---------------------------------------------------------------- speech


@pytest.mark.parametrize("fmt", CONTENT_TYPES)
def test_speech_in_each_format_decodes_to_what_was_spoken(platform_url: str, fmt: str) -> None:
    tenant = f"fmt-{uuid.uuid4().hex[:8]}"

    response = client_of(platform_url, tenant).audio.speech.with_raw_response.create(
        model="tts", voice="alloy", input=SENTENCE, response_format=fmt
    )

    assert response.headers["content-type"] == CONTENT_TYPES[fmt]
    assert response.headers["x-labubu-model"] == "en_US-joe-medium"
    spoken = spoken_seconds(platform_url, tenant)
    assert spoken > 1.0
    assert decoded_seconds(response.content, fmt) == pytest.approx(spoken, abs=0.05)


def test_speed_divides_the_length(platform_url: str) -> None:
    lengths = {}
    for speed in (1.0, 2.0):
        tenant = f"speed-{uuid.uuid4().hex[:8]}"
        client_of(platform_url, tenant).audio.speech.create(
            model="tts", voice="alloy", input=SENTENCE, response_format="wav", speed=speed
        )
        lengths[speed] = spoken_seconds(platform_url, tenant)

    assert lengths[2.0] / lengths[1.0] == pytest.approx(0.5, abs=0.06)


# ---------------------------------------------------------------- transcription


def test_an_mp3_is_transcribed(client: openai.OpenAI, mp3: bytes) -> None:
    assert media.media_type(mp3) == "audio/mpeg"

    transcript = client.audio.transcriptions.create(model="stt", file=("fox.mp3", mp3, "audio/mpeg"))

    assert len(words(transcript.text) & set(SENTENCE.split())) >= 7, transcript.text


def test_an_ogg_opus_upload_is_transcribed(client: openai.OpenAI) -> None:
    opus = client.audio.speech.create(model="tts", voice="alloy", input=SENTENCE, response_format="opus").content

    transcript = client.audio.transcriptions.create(model="stt", file=("fox.ogg", opus, "audio/ogg"))

    assert len(words(transcript.text) & set(SENTENCE.split())) >= 7, transcript.text


def cues(text: str, timing: re.Pattern[str]) -> Iterator[tuple[float, float, str]]:
    """The cues of a SubRip or WebVTT body: start, end and text, checking the layout on the way."""
    for block in text.strip("\n").split("\n\n"):
        lines = block.split("\n")
        if timing is SRT_TIMING:
            assert lines.pop(0).isdigit(), block
        match = timing.match(lines[0])
        assert match, block
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(part) for part in match.groups())
        yield h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, " ".join(lines[1:])


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_are_well_formed_and_timed(client: openai.OpenAI, mp3: bytes, fmt: str) -> None:
    body = client.audio.transcriptions.create(model="stt", file=("fox.mp3", mp3), response_format=fmt)

    assert isinstance(body, str)
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n\n")
        body = body.removeprefix("WEBVTT\n\n")
    timed = list(cues(body, SRT_TIMING if fmt == "srt" else VTT_TIMING))
    assert timed
    seconds = decoded_seconds(mp3, "mp3")
    for start, end, _ in timed:
        assert 0 <= start < end <= seconds + 0.5
    assert "fox" in words(" ".join(text for _, _, text in timed))


def test_verbose_json_has_timed_segments_and_words(client: openai.OpenAI, mp3: bytes) -> None:
    transcript = client.audio.transcriptions.create(
        model="stt",
        file=("fox.mp3", mp3),
        response_format="verbose_json",
        timestamp_granularities=["segment", "word"],
    )

    assert transcript.language == "en"
    assert transcript.duration == pytest.approx(decoded_seconds(mp3, "mp3"), abs=0.05)
    assert transcript.segments and transcript.segments[0].start == 0
    assert " ".join(segment.text for segment in transcript.segments) == transcript.text
    assert transcript.words and "fox" in words(" ".join(word.word for word in transcript.words))


def test_refused_fields_are_named(client: openai.OpenAI, mp3: bytes) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        client.audio.speech.create(model="tts", voice="alloy", input=SENTENCE, instructions="Whisper it.")
    assert raised.value.body["details"][0]["field"] == "instructions"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        client.audio.transcriptions.create(model="stt", file=("fox.mp3", mp3), timestamp_granularities=["word"])
    assert raised.value.body["details"][0]["field"] == "timestamp_granularities"  # type: ignore[index]
