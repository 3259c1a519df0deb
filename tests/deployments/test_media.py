"""WAV and image checks: malformed files and bombs are refused before any model sees them."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from deployments import media
from deployments.types import InvalidInput


def silent_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    return media.wav_bytes(b"\x00\x00" * int(seconds * rate), rate)


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_wav_info_reads_the_header() -> None:
    info = media.wav_info(silent_wav(2.0))
    assert (info.sample_rate, info.channels, info.sample_width) == (16000, 1, 2)
    assert info.seconds == pytest.approx(2.0)


def test_wav_claiming_hours_is_refused() -> None:
    data = bytearray(silent_wav(0.1))
    struct.pack_into("<I", data, 40, 16000 * 2 * 3600 * 5)  # the data chunk's size: five hours
    with pytest.raises(InvalidInput, match="claims more"):
        media.wav_info(bytes(data))


@pytest.mark.parametrize("data", [b"", b"hello, this is not audio" * 4, silent_wav()[:30]])
def test_not_a_wav_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        media.wav_info(data)


def test_8_bit_wav_is_refused() -> None:
    buffer = io.BytesIO()
    import wave

    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(b"\x80" * 8000)
    with pytest.raises(InvalidInput, match="16-bit"):
        media.wav_info(buffer.getvalue())


def test_png_and_jpeg_are_read() -> None:
    assert media.image_info(png(12, 7)) == media.ImageInfo("image/png", 12, 7)
    buffer = io.BytesIO()
    Image.new("RGB", (5, 9)).save(buffer, format="JPEG")
    assert media.image_info(buffer.getvalue()) == media.ImageInfo("image/jpeg", 5, 9)


def test_png_bomb_is_refused_from_its_header() -> None:
    data = bytearray(png())
    struct.pack_into(">II", data, 16, 100_000, 100_000)  # IHDR width and height
    with pytest.raises(InvalidInput):
        media.image_info(bytes(data))


@pytest.mark.parametrize("data", [b"not an image at all", png()[:40], media.PNG_MAGIC + b"\x00" * 30])
def test_broken_images_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        media.image_info(data)


def test_known_unsupported_formats_are_named() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")
    assert media.unsupported_format(buffer.getvalue()) == "image/gif"
    assert media.unsupported_format(b"ID3\x03rest-of-an-mp3") == "audio/mpeg"
    assert media.unsupported_format(png()) is None
