"""Text to speech: the real Piper voice, and the real Google SDK against a local fake.

The Google client is the real `google-cloud-texttospeech` on its REST transport, talking to
`tests/fakes/google_cloud.py` on 127.0.0.1. That Piper's speech is intelligible is checked in
`test_stt.py`, where Whisper hears it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.failover import BackendChain
from deployments.media import wav_info
from deployments.tts import GoogleTTSBackend, PiperBackend
from deployments.types import BackendFailure, InvalidInput, ModelUnavailable, SpeechRequest
from tests.fakes.google_cloud import FakeGoogleCloud

SENTENCE = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    backend = PiperBackend()
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
def google(fake: FakeGoogleCloud) -> GoogleTTSBackend:
    backend = GoogleTTSBackend(api_endpoint=fake.url, timeout_s=5)
    backend.load()
    return backend


# ---------------------------------------------------------------- Piper


async def test_piper_speaks_a_mono_16_bit_wav(piper: PiperBackend) -> None:
    result = await piper.run(SpeechRequest(SENTENCE))

    info = wav_info(result.wav)
    assert (info.channels, info.sample_width, info.sample_rate) == (1, 2, 22_050)
    assert result.sample_rate == 22_050
    assert result.audio_seconds == pytest.approx(info.seconds)
    assert 1.5 < result.audio_seconds < 6
    assert result.model == "en_US-joe-medium"
    assert piper.voices == ["joe"]


@pytest.mark.parametrize("voice", ["alloy", "joe", None])
async def test_piper_unknown_voice_falls_back_to_its_own(piper: PiperBackend, voice: str | None) -> None:
    result = await piper.run(SpeechRequest("hello there", voice=voice))

    assert result.model == "en_US-joe-medium"
    assert wav_info(result.wav).seconds > 0.3


@pytest.fixture(scope="module")
def steady_piper() -> PiperBackend:
    """Piper without its random variation of sound lengths (`noise_w`), so that two syntheses of
    one sentence last the same and only `speed` tells them apart."""
    backend = PiperBackend(noise_scale=0.0, noise_w_scale=0.0)
    backend.load()
    return backend


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
async def test_piper_speed_divides_the_length(steady_piper: PiperBackend, speed: float) -> None:
    normal = await steady_piper.run(SpeechRequest(SENTENCE))
    paced = await steady_piper.run(SpeechRequest(SENTENCE, speed=speed))

    assert paced.audio_seconds == pytest.approx(normal.audio_seconds / speed, rel=0.03)
    assert wav_info(paced.wav).seconds == pytest.approx(paced.audio_seconds)


@pytest.mark.parametrize("text", ["", "   \n\t", "..."])
async def test_piper_refuses_text_with_nothing_to_say(piper: PiperBackend, text: str) -> None:
    with pytest.raises(InvalidInput):
        await piper.run(SpeechRequest(text))


@pytest.mark.parametrize("speed", [0.0, 0.1, 4.5])
async def test_piper_refuses_speeds_out_of_range(piper: PiperBackend, speed: float) -> None:
    with pytest.raises(InvalidInput, match="speed"):
        await piper.run(SpeechRequest("hello", speed=speed))


def test_piper_without_a_voice_file_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no Piper voice"):
        PiperBackend(voice=str(tmp_path / "en_GB-alan-low.onnx")).load()
    broken = tmp_path / "en_GB-alan-low.onnx"
    broken.write_bytes(b"not an onnx model")
    broken.with_name(broken.name + ".json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="cannot be loaded"):
        PiperBackend(voice=str(broken)).load()


def test_piper_names_its_voice_from_the_file() -> None:
    backend = PiperBackend(voice="/voices/en_GB-alan-low.onnx")

    assert (backend.model, backend.voices) == ("en_GB-alan-low", ["alan"])


# ---------------------------------------------------------------- Google Text-to-Speech


async def test_google_sends_the_text_and_returns_its_wav(google: GoogleTTSBackend, fake: FakeGoogleCloud) -> None:
    result = await google.run(SpeechRequest(f"  {SENTENCE} ", speed=1.25))

    info = wav_info(result.wav)
    assert (info.channels, info.sample_rate) == (1, 24_000)
    assert result.sample_rate == 24_000
    assert result.audio_seconds == pytest.approx(info.seconds)
    assert result.model == "en-US-Standard-C"
    [sent] = fake.requests
    assert sent.path == "/v1/text:synthesize"
    assert sent.body["input"] == {"text": SENTENCE}
    assert sent.body["voice"] == {"languageCode": "en-US", "name": "en-US-Standard-C"}
    assert sent.body["audioConfig"] == {"audioEncoding": "LINEAR16", "sampleRateHertz": 24_000, "speakingRate": 1.25}


@pytest.mark.parametrize(
    ("voice", "sent_voice"),
    [
        ("en-GB-Neural2-A", {"languageCode": "en-GB", "name": "en-GB-Neural2-A"}),
        ("alloy", {"languageCode": "en-US", "name": "en-US-Standard-C"}),
    ],
)
async def test_google_uses_google_voice_names_and_falls_back_for_others(
    google: GoogleTTSBackend, fake: FakeGoogleCloud, voice: str, sent_voice: dict[str, str]
) -> None:
    result = await google.run(SpeechRequest("hello", voice=voice))

    assert fake.requests[0].body["voice"] == sent_voice
    assert result.model == sent_voice["name"]


async def test_google_bare_samples_are_wrapped_as_wav(google: GoogleTTSBackend, fake: FakeGoogleCloud) -> None:
    fake.wav_header = False

    result = await google.run(SpeechRequest("hello there"))

    assert result.wav[:4] == b"RIFF"
    assert wav_info(result.wav).sample_rate == result.sample_rate == 24_000


async def test_google_refuses_empty_text_without_calling(google: GoogleTTSBackend, fake: FakeGoogleCloud) -> None:
    with pytest.raises(InvalidInput):
        await google.run(SpeechRequest(" "))
    assert fake.requests == []


@pytest.mark.parametrize(("status", "error"), [(500, BackendFailure), (400, InvalidInput)])
async def test_google_errors_map_to_platform_errors(
    google: GoogleTTSBackend, fake: FakeGoogleCloud, status: int, error: type[Exception]
) -> None:
    fake.fail_status = status

    with pytest.raises(error) as raised:
        await google.run(SpeechRequest("hello"))

    assert type(raised.value) is error


async def test_chain_falls_back_from_failing_google_to_piper(
    google: GoogleTTSBackend, piper: PiperBackend, fake: FakeGoogleCloud
) -> None:
    fake.fail_status = 500
    chain = BackendChain([google, piper])
    chain.load()

    result = await chain.run(SpeechRequest("hello there", voice="alloy"))

    assert result.model == "en_US-joe-medium"
    assert wav_info(result.wav).sample_rate == 22_050
    assert len(fake.requests) == 1
    assert chain.health()[0]["failures"] == 1
