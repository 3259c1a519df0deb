"""Speech to text: faster-whisper on real speech, and the real Google SDK against a local fake.

The speech is Piper's: Piper says a sentence, Whisper must hear it back (a real round trip, no
recorded fixtures). The Google client is the real `google-cloud-speech` on its REST transport,
talking to `tests/fakes/google_cloud.py` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments import media
from deployments.failover import BackendChain
from deployments.media import wav_bytes, wav_info
from deployments.stt import FasterWhisperBackend, GoogleSpeechBackend
from deployments.tts import PiperBackend
from deployments.types import (
    BackendFailure,
    BackendTimeout,
    InvalidInput,
    ModelUnavailable,
    Segment,
    SpeechRequest,
    TranscribeRequest,
    TranscribeResult,
)
from tests.fakes.google_cloud import FakeGoogleCloud

SENTENCE = "the quick brown fox jumps over the lazy dog"
SECOND_SENTENCE = "my name is joe and i read the news every day."


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    backend = PiperBackend()
    backend.load()
    return backend


@pytest.fixture(scope="module")
def speech(piper: PiperBackend) -> bytes:
    """Piper's WAV of SENTENCE."""
    return asyncio.run(piper.run(SpeechRequest(SENTENCE))).wav


@pytest.fixture(scope="module")
def two_sentences(piper: PiperBackend, speech: bytes) -> bytes:
    """SENTENCE, a second of silence, then SECOND_SENTENCE: two segments for Whisper."""
    second = asyncio.run(piper.run(SpeechRequest(SECOND_SENTENCE))).wav
    return wav_bytes(speech[44:] + b"\x00\x00" * 22_050 + second[44:], 22_050)


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperBackend:
    backend = FasterWhisperBackend()
    backend.load()
    return backend


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogleCloud]:
    with FakeGoogleCloud() as server:
        yield server


@pytest.fixture()
def fake(google_server: FakeGoogleCloud) -> FakeGoogleCloud:
    google_server.reset()
    return google_server


@pytest.fixture()
def google(fake: FakeGoogleCloud) -> GoogleSpeechBackend:
    backend = GoogleSpeechBackend(api_endpoint=fake.url, timeout_s=5)
    backend.load()
    return backend


def words(text: str) -> list[str]:
    return [word.strip(".,!?;:").lower() for word in text.split()]


def with_frame_count(wav: bytes, frames: int) -> bytes:
    """The same file with its header's frame count (and data size) rewritten."""
    data_size = frames * 2
    return wav[:4] + struct.pack("<I", 36 + data_size) + wav[8:40] + struct.pack("<I", data_size) + wav[44:]


def eight_bit_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(b"\x80" * 8000)
    return buffer.getvalue()


BAD_WAVS = {
    "not a wav": b"ID3\x04" + b"\x00" * 400,
    "cut in the header": wav_bytes(b"\x00\x10" * 16_000, 16_000)[:30],
    "truncated": wav_bytes(b"\x00\x10" * 16_000 * 3, 16_000)[:1000],
    "header claims hours": with_frame_count(wav_bytes(b"\x00\x10" * 16_000, 16_000), 16_000 * 3 * 3600),
    "8-bit samples": eight_bit_wav(),
}


# ---------------------------------------------------------------- faster-whisper


async def test_whisper_hears_what_piper_said(whisper: FasterWhisperBackend, speech: bytes) -> None:
    result = await whisper.run(TranscribeRequest(speech))

    heard = set(words(result.text))
    assert sum(word in heard for word in SENTENCE.split()) >= 7, result.text
    assert result.audio_seconds == pytest.approx(wav_info(speech).seconds)
    assert result.language == "en"
    assert result.model == whisper.model == "whisper-tiny.en"


async def test_whisper_hears_a_short_clip_in_a_short_window(whisper: FasterWhisperBackend, speech: bytes) -> None:
    seconds = wav_info(speech).seconds
    result = await whisper.run(TranscribeRequest(speech, window_s=20.0))

    heard = set(words(result.text))
    assert sum(word in heard for word in SENTENCE.split()) >= 7, result.text
    assert result.language == "en" and result.model == "whisper-tiny.en"
    # The window's path decodes without timestamps: one segment over the whole clip.
    assert result.segments == [Segment(0.0, seconds, result.text)]


@pytest.mark.parametrize(
    "request_options",
    [{"window_s": 2.0}, {"window_s": 20.0, "word_timestamps": True}, {"window_s": 20.0, "prompt": "Foxes."}],
    ids=["longer than the window", "words asked for", "a prompt"],
)
async def test_whisper_takes_its_full_window_for_what_a_short_one_cannot_do(
    whisper: FasterWhisperBackend, speech: bytes, request_options: dict[str, Any]
) -> None:
    seconds = wav_info(speech).seconds
    result = await whisper.run(TranscribeRequest(speech, **request_options))

    assert "fox" in words(result.text)
    [segment] = result.segments
    assert segment.end != seconds  # timed by Whisper's timestamp tokens (steps of 20 ms)
    assert bool(result.words) == bool(request_options.get("word_timestamps"))


async def test_whisper_takes_a_locale_for_its_language(whisper: FasterWhisperBackend, speech: bytes) -> None:
    result = await whisper.run(TranscribeRequest(speech, language="en-US"))

    assert result.language == "en"
    assert "fox" in words(result.text)


@pytest.mark.parametrize("audio", BAD_WAVS.values(), ids=BAD_WAVS.keys())
async def test_whisper_refuses_bad_wavs(whisper: FasterWhisperBackend, audio: bytes) -> None:
    with pytest.raises(InvalidInput):
        await whisper.run(TranscribeRequest(audio))


def assert_timed(result: TranscribeResult, seconds: float) -> None:
    """Segments in order, inside the audio, whose texts make up the transcript."""
    assert result.segments
    for before, after in zip(result.segments, result.segments[1:], strict=False):
        assert before.end <= after.start + 0.01
    for segment in result.segments:
        assert 0 <= segment.start < segment.end <= seconds + 0.5, segment
    assert " ".join(segment.text for segment in result.segments) == result.text


async def test_whisper_times_its_segments(whisper: FasterWhisperBackend, two_sentences: bytes, speech: bytes) -> None:
    seconds = wav_info(two_sentences).seconds

    result = await whisper.run(TranscribeRequest(two_sentences))

    assert_timed(result, seconds)
    first, second = result.segments
    assert "fox" in words(first.text) and "news" in words(second.text)
    first_seconds = wav_info(speech).seconds
    assert first_seconds - 0.5 < second.start < first_seconds + 1.5, result.segments  # in the pause, about
    assert second.end > seconds - 1.0
    assert result.words == []  # not asked for


async def test_whisper_times_words_when_asked(whisper: FasterWhisperBackend, speech: bytes) -> None:
    result = await whisper.run(TranscribeRequest(speech, word_timestamps=True))

    said = [word.word.strip(" .,").lower() for word in result.words]
    assert said[:4] == ["the", "quick", "brown", "fox"], said
    starts = [word.start for word in result.words]
    assert starts == sorted(starts) and all(word.start <= word.end for word in result.words)
    assert result.words[-1].end <= wav_info(speech).seconds + 0.5


async def test_whisper_hears_an_mp3_decoded_for_it(whisper: FasterWhisperBackend, speech: bytes) -> None:
    mp3, _ = media.encode_audio(speech, "mp3")

    result = await whisper.run(TranscribeRequest(media.to_wav(mp3)))

    heard = set(words(result.text))
    assert sum(word in heard for word in SENTENCE.split()) >= 7, result.text
    assert result.audio_seconds == pytest.approx(wav_info(speech).seconds, abs=0.05)


async def test_whisper_hears_fast_speech(whisper: FasterWhisperBackend, piper: PiperBackend) -> None:
    fast = await piper.run(SpeechRequest(SENTENCE, speed=1.5))

    result = await whisper.run(TranscribeRequest(fast.wav))

    heard = set(words(result.text))
    assert sum(word in heard for word in SENTENCE.split()) >= 6, result.text


async def test_whisper_takes_the_prompt_and_the_temperature(
    whisper: FasterWhisperBackend, speech: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, object]] = []
    transcribe = whisper._whisper.transcribe

    def spy(audio: object, **options: object) -> object:
        calls.append(options)
        return transcribe(audio, **options)

    monkeypatch.setattr(whisper._whisper, "transcribe", spy)

    await whisper.run(TranscribeRequest(speech))
    result = await whisper.run(TranscribeRequest(speech, prompt="A pangram, read slowly.", temperature=0.3))

    assert "temperature" not in calls[0] and calls[0]["initial_prompt"] is None  # Whisper's fallback schedule
    assert calls[1]["initial_prompt"] == "A pangram, read slowly." and calls[1]["temperature"] == 0.3
    assert "fox" in words(result.text)


def test_whisper_without_weights_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no Whisper model directory"):
        FasterWhisperBackend(model_path=str(tmp_path / "missing")).load()
    with pytest.raises(ModelUnavailable, match="cannot be loaded"):
        FasterWhisperBackend(model_path=str(tmp_path)).load()  # a folder with no model in it


def test_whisper_model_names() -> None:
    assert FasterWhisperBackend("large-v3").model == "whisper-large-v3"
    assert FasterWhisperBackend("Systran/faster-whisper-small").model == "faster-whisper-small"
    assert FasterWhisperBackend("/models/whisper-medium-ct2/").model == "whisper-medium-ct2"


# ---------------------------------------------------------------- Google Speech-to-Text


async def test_google_sends_the_audio_and_reads_the_transcript(
    google: GoogleSpeechBackend, fake: FakeGoogleCloud, speech: bytes
) -> None:
    fake.transcript = "The quick brown fox."

    result = await google.run(TranscribeRequest(speech, language="en"))

    assert result.text == "The quick brown fox."
    assert result.audio_seconds == pytest.approx(wav_info(speech).seconds)
    assert result.model == "google-speech-default"
    [sent] = fake.requests
    assert sent.path == "/v1/speech:recognize"
    assert sent.audio == speech
    config = sent.body["config"]
    assert config["sampleRateHertz"] == wav_info(speech).sample_rate == 22_050
    assert config["encoding"] == 1  # LINEAR16, sent as a number ($alt=json;enum-encoding=int)
    assert config["languageCode"] == "en-US"  # "en" matches the configured locale, which is kept
    assert config["model"] == "default"
    assert "authorization" not in sent.headers  # anonymous credentials on a plain-HTTP endpoint


async def test_google_sends_the_api_key(fake: FakeGoogleCloud, speech: bytes) -> None:
    backend = GoogleSpeechBackend(api_endpoint=fake.url, api_key="test-key-123", language="en-GB")
    backend.load()

    await backend.run(TranscribeRequest(speech, language="fr-FR"))

    [sent] = fake.requests
    assert sent.headers["x-goog-api-key"] == "test-key-123"
    assert sent.body["config"]["languageCode"] == "fr-FR"


async def test_google_signs_with_a_service_account_file(fake: FakeGoogleCloud, speech: bytes, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    account = {
        "type": "service_account",
        "project_id": "labubu-test",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "stt@labubu-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{fake.url}/token",
    }
    credentials_file = tmp_path / "account.json"
    credentials_file.write_text(json.dumps(account))
    backend = GoogleSpeechBackend(api_endpoint=fake.url, credentials_file=str(credentials_file))
    backend.load()

    await backend.run(TranscribeRequest(speech))

    # A service account signs its own JWT (no token exchange), sent as a bearer token.
    [sent] = fake.requests
    assert sent.headers["authorization"].startswith("Bearer ey")


async def test_google_refuses_bad_wavs_without_calling(google: GoogleSpeechBackend, fake: FakeGoogleCloud) -> None:
    for audio in BAD_WAVS.values():
        with pytest.raises(InvalidInput):
            await google.run(TranscribeRequest(audio))
    assert fake.requests == []


async def test_google_times_segments_by_their_words(
    google: GoogleSpeechBackend, fake: FakeGoogleCloud, speech: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def word(text: str, start: str, end: str) -> dict[str, str]:
        return {"word": text, "startTime": start, "endTime": end}

    answer = {
        "results": [
            {
                "alternatives": [
                    {"transcript": "The quick", "words": [word("The", "0.1s", "0.3s"), word("quick", "0.3s", "0.8s")]}
                ],
                "resultEndTime": "0.900s",
                "languageCode": "en-us",
            },
            {
                "alternatives": [
                    {"transcript": " brown fox.", "words": [word("brown", "1.2s", "1.5s"), word("fox.", "1.5s", "2s")]}
                ]
            },
        ]
    }
    monkeypatch.setattr(fake, "recognize", lambda request: answer)

    result = await google.run(TranscribeRequest(speech, word_timestamps=True))

    assert result.text == "The quick brown fox."
    assert result.segments == [Segment(0.1, 0.9, "The quick"), Segment(1.2, 2.0, "brown fox.")]
    assert [(w.word, w.start, w.end) for w in result.words][-1] == ("fox.", 1.5, 2.0)
    assert fake.requests[0].body["config"]["enableWordTimeOffsets"] is True
    assert (await google.run(TranscribeRequest(speech))).words == []  # not asked for


async def test_google_without_times_gives_one_segment_over_the_audio(
    google: GoogleSpeechBackend, fake: FakeGoogleCloud, speech: bytes
) -> None:
    fake.transcript = "The quick brown fox."

    result = await google.run(TranscribeRequest(speech))

    assert result.segments == [Segment(0.0, wav_info(speech).seconds, "The quick brown fox.")]


@pytest.mark.parametrize(
    ("field", "options"), [("prompt", {"prompt": "Names: Joe."}), ("temperature", {"temperature": 0.5})]
)
async def test_google_refuses_a_prompt_and_a_temperature(
    google: GoogleSpeechBackend, fake: FakeGoogleCloud, speech: bytes, field: str, options: dict[str, object]
) -> None:
    with pytest.raises(InvalidInput) as raised:
        await google.run(TranscribeRequest(speech, **options))  # type: ignore[arg-type]

    assert raised.value.details == [{"field": field, "reason": "google_speech takes no " + field}]
    assert fake.requests == []


async def test_google_takes_at_most_a_minute(google: GoogleSpeechBackend, fake: FakeGoogleCloud) -> None:
    long_audio = wav_bytes(b"\x00\x00" * 8000 * 61, 8000)

    with pytest.raises(BackendFailure, match="at most 60 s"):
        await google.run(TranscribeRequest(long_audio))
    assert fake.requests == []


@pytest.mark.parametrize(("status", "error"), [(500, BackendFailure), (503, BackendFailure), (400, InvalidInput)])
async def test_google_errors_map_to_platform_errors(
    google: GoogleSpeechBackend, fake: FakeGoogleCloud, speech: bytes, status: int, error: type[Exception]
) -> None:
    fake.fail_status = status

    with pytest.raises(error) as raised:
        await google.run(TranscribeRequest(speech))

    assert type(raised.value) is error
    assert len(fake.requests) == 1  # the SDK's own retries are off: the failover chain decides


async def test_google_slow_answer_is_a_timeout(fake: FakeGoogleCloud, speech: bytes) -> None:
    backend = GoogleSpeechBackend(api_endpoint=fake.url, timeout_s=0.3)
    backend.load()
    fake.delay_s = 1.0

    with pytest.raises(BackendTimeout):
        await backend.run(TranscribeRequest(speech))


async def test_google_unreachable_is_a_backend_failure(speech: bytes) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = GoogleSpeechBackend(api_endpoint=f"http://127.0.0.1:{port}", timeout_s=2)
    backend.load()

    with pytest.raises(BackendFailure, match="cannot be reached"):
        await backend.run(TranscribeRequest(speech))


def test_google_without_credentials_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login to find
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # and no metadata server to ask

    with pytest.raises(ModelUnavailable, match="GOOGLE_APPLICATION_CREDENTIALS"):
        GoogleSpeechBackend().load()
    with pytest.raises(ModelUnavailable, match="was not found"):
        GoogleSpeechBackend(credentials_file=str(tmp_path / "missing.json")).load()


async def test_chain_falls_back_from_failing_google_to_whisper(
    google: GoogleSpeechBackend, whisper: FasterWhisperBackend, fake: FakeGoogleCloud, speech: bytes
) -> None:
    fake.fail_status = 500
    chain = BackendChain([google, whisper])
    chain.load()

    result = await chain.run(TranscribeRequest(speech))

    assert result.model == "whisper-tiny.en"
    assert "fox" in words(result.text)
    assert len(fake.requests) == 1
    google_health, whisper_health = chain.health()
    assert google_health["failures"] == 1 and "HTTP 500" in google_health["reason"]
    assert whisper_health["status"] == "ready"
