"""Which calls go to a replica by value (Serve's gRPC channel, capped at 4 MB) and which by reference."""

from __future__ import annotations

from deployments.types import (
    CaptionRequest,
    ChatMessage,
    EmbedRequest,
    ImageRequest,
    LLMRequest,
    SpeechRequest,
    TranscribeRequest,
)
from modalities.transport import BY_VALUE_MAX_BYTES, by_value, payload_bound

SERVE_GRPC_CAP = 4 * 1024 * 1024


def test_everyday_calls_go_by_value() -> None:
    assert by_value(LLMRequest(messages=[ChatMessage("user", "Say OK.")], max_tokens=256))
    assert by_value(LLMRequest(prompt="Once upon a time", max_tokens=2048))
    assert by_value(EmbedRequest(texts=["a sentence"] * 8))
    assert by_value(TranscribeRequest(audio=b"\0" * 300_000))  # ~10 s of 16 kHz speech
    assert by_value(SpeechRequest(text="Hello there, how are you today?"))
    assert by_value(CaptionRequest(images=[b"\0" * 200_000]))
    assert by_value(ImageRequest(prompt="a cat", width=256, height=256, n=1))


def test_calls_that_could_reach_the_cap_go_by_reference() -> None:
    assert not by_value(TranscribeRequest(audio=b"\0" * 2_000_000))
    assert not by_value(SpeechRequest(text="word " * 400))  # minutes of audio
    assert not by_value(SpeechRequest(text="x" * 100, speed=0.25))  # four times as long
    assert not by_value(CaptionRequest(images=[b"\0" * 600_000, b"\0" * 600_000]))
    assert not by_value(ImageRequest(prompt="a cat", width=1024, height=1024, n=1))
    assert not by_value(ImageRequest(prompt="a cat", width=256, height=256, n=8))
    assert not by_value(EmbedRequest(texts=["a sentence"] * 100))
    assert not by_value(LLMRequest(prompt="x" * 300_000, max_tokens=16))
    assert not by_value("an unknown request")


def test_the_bound_keeps_a_wide_margin_below_serves_cap() -> None:
    assert BY_VALUE_MAX_BYTES * 4 <= SERVE_GRPC_CAP
    # The largest answer a by-value image call may have: raw RGBA pixels, larger than any PNG of them.
    biggest = ImageRequest(prompt="a cat", width=480, height=480, n=1)
    assert by_value(biggest) and biggest.width * biggest.height * 4 < BY_VALUE_MAX_BYTES
    assert payload_bound(SpeechRequest(text="abc")) < payload_bound(SpeechRequest(text="abcdef"))
