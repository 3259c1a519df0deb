"""The realtime session's pieces: sentence splitting, resampling, session config checks, avatars
in a config, and the VAD's pauses (on real speech by Piper)."""

from __future__ import annotations

import pytest

from serve_app.realtime.audio import VAD_RATE, WIRE_RATE, Vad, pcm_of, resample, wav_of
from serve_app.realtime.session import EventError, SessionConfig, avatar_named, configured, split_sentences


def test_sentences_are_cut_as_they_end() -> None:
    assert split_sentences("Hello there. How are") == (["Hello there."], "How are")
    assert split_sentences("One! Two? Three.") == (["One!", "Two?"], "Three.")
    assert split_sentences("A line\nand more") == (["A line"], "and more")
    long = "word " * 60
    sentences, rest = split_sentences(long)
    assert sentences and len(sentences[0]) <= 200 and long.split() == (" ".join(sentences) + " " + rest).split()


def test_the_first_words_go_ahead() -> None:
    # Nothing spoken yet: a clause, or three whole words, are spoken without waiting for the full stop.
    assert split_sentences("Oh well, the sky", first=True) == (["Oh well,"], "the sky")
    assert split_sentences("Well, as you know, the", first=True) == (["Well, as you know,"], "the")
    assert split_sentences("The sky on a", first=True) == (["The sky on"], "a")
    assert split_sentences("The sky on", first=True) == ([], "The sky on")  # "on" may go on
    assert split_sentences("The sky on a") == ([], "The sky on a")


def test_resampling_keeps_the_duration() -> None:
    second = b"\x10\x00" * 24_000
    assert len(resample(second, 24_000, 16_000)) == 16_000 * 2
    assert len(resample(b"\x10\x00" * 22_050, 22_050, 24_000)) == 24_000 * 2
    assert resample(b"", 24_000, 16_000) == b""
    assert len(pcm_of(wav_of(b"\x00\x00" * 22_050, 22_050))) == 24_000 * 2


def test_session_updates_are_checked_before_anything_changes() -> None:
    config = SessionConfig()
    config.update({"type": "realtime", "instructions": "Be brief.", "audio": {"input": {"turn_detection": None}}})
    assert config.instructions == "Be brief." and config.turn_detection is None
    for bad, param in [
        ({"output_modalities": ["video"]}, "session.output_modalities"),
        ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "session.audio.input.format"),
        ({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}, "session.audio.input.turn_detection"),
        ({"max_output_tokens": 0}, "session.max_output_tokens"),
        ({"audio": {"input": "x"}}, "session"),
        ({"type": "transcription"}, "session.type"),
    ]:
        with pytest.raises(EventError) as refused:
            config.update({"instructions": "changed", **bad})
        assert refused.value.param == param
        assert config.instructions == "Be brief."


def test_an_avatar_gives_the_persona_and_explicit_fields_win() -> None:
    avatar = {"id": "avatar_tutor", "instructions": "You are a math tutor.", "voice": "joe"}
    assert avatar_named({"avatar": "avatar_tutor"}) == "avatar_tutor"
    assert avatar_named({"avatar": 3}) is None and avatar_named("x") is None
    config = SessionConfig()
    tutor = configured(config, {"avatar": "avatar_tutor"}, avatar)
    assert (tutor.avatar, tutor.instructions, tutor.voice) == ("avatar_tutor", "You are a math tutor.", "joe")
    assert tutor.body("sess_1", "llm")["avatar"] == "avatar_tutor"
    brief = configured(config, {"avatar": "avatar_tutor", "instructions": "Be brief."}, avatar)
    assert (brief.instructions, brief.voice) == ("Be brief.", "joe")
    with pytest.raises(EventError):
        configured(tutor, {"avatar": "avatar_tutor", "output_modalities": ["smell"]}, avatar)
    # The original is never changed: a refused update leaves the session as it was.
    assert config.avatar is None and "avatar" not in config.body("sess_1", "llm")
    with pytest.raises(EventError) as refused:
        configured(config, {"avatar": 7})
    assert refused.value.param == "session.avatar"


@pytest.fixture(scope="module")
def speech_with_a_pause() -> bytes:
    """A sentence with a comma (a pause shorter than the silence window), by the real Piper voice,
    as pcm16 at 24 kHz between stretches of silence."""
    import asyncio

    from deployments.tts import PiperBackend
    from deployments.types import SpeechRequest

    piper = PiperBackend()
    piper.load()
    result = asyncio.run(piper.run(SpeechRequest(text="Well, I think, maybe the answer is blue.")))
    silence = b"\x00\x00" * WIRE_RATE
    return silence + pcm_of(result.wav, WIRE_RATE) + silence


def test_the_vad_reports_pauses_before_the_stop(speech_with_a_pause: bytes) -> None:
    vad = Vad(threshold=0.5, silence_ms=400, origin_ms=1_000, pause_ms=64)
    events = []
    chunk = WIRE_RATE // 10 * 2  # 100 ms, as clients append
    for offset in range(0, len(speech_with_a_pause), chunk):
        events += vad.feed(resample(speech_with_a_pause[offset : offset + chunk], WIRE_RATE, VAD_RATE))
    kinds = [e.kind for e in events]
    # Pauses and resumes alternate (the commas: pauses the speaker went on from); the last pause
    # is where the turn's speech ends, and the stop says so once the silence window is over.
    assert kinds[0] == "start" and kinds[-1] == "stop", kinds
    assert kinds[1:-1] == ["pause", "resume"] * ((len(kinds) - 3) // 2) + ["pause"] and "resume" in kinds, kinds
    assert events[-1].ms == events[-2].ms and events[0].ms >= 1_000
    assert all(a.ms <= b.ms for a, b in zip(events, events[1:], strict=False))
