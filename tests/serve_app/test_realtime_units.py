"""The realtime session's pure pieces: sentence splitting, resampling, session config checks."""

from __future__ import annotations

import pytest

from serve_app.realtime.audio import pcm_of, resample, wav_of
from serve_app.realtime.session import EventError, SessionConfig, split_sentences


def test_sentences_are_cut_as_they_end() -> None:
    assert split_sentences("Hello there. How are") == (["Hello there."], "How are")
    assert split_sentences("One! Two? Three.") == (["One!", "Two?"], "Three.")
    assert split_sentences("A line\nand more") == (["A line"], "and more")
    long = "word " * 60
    sentences, rest = split_sentences(long)
    assert sentences and len(sentences[0]) <= 200 and long.split() == (" ".join(sentences) + " " + rest).split()


def test_the_first_words_go_ahead() -> None:
    # Nothing spoken yet: a clause, or six whole words, are spoken without waiting for the full stop.
    assert split_sentences("Oh well now, the sky", first=True) == (["Oh well now,"], "the sky")
    assert split_sentences("Well, as you know, the", first=True) == (["Well, as you know,"], "the")
    assert split_sentences("The sky on a sunny day is", first=True) == (["The sky on a sunny day"], "is")
    assert split_sentences("The sky on a sunny", first=True) == ([], "The sky on a sunny")
    assert split_sentences("The sky on a sunny day is") == ([], "The sky on a sunny day is")


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
