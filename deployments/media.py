"""Checks and conversions of the media that cross the platform: WAV audio, PNG and JPEG images.

Every check raises `InvalidInput` with a reason a person can act on, so that a malformed file is a
4xx at the door, never a crash inside a model.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

from deployments.types import InvalidInput

# A decoded image larger than this is refused before its pixels are read (a "decompression bomb").
MAX_IMAGE_PIXELS = 4096 * 4096
# Audio longer than this is refused: the header alone decides, before the samples are read.
MAX_AUDIO_SECONDS = 30 * 60

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    sample_width: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class ImageInfo:
    content_type: str  # "image/png" or "image/jpeg"
    width: int
    height: int


def wav_info(data: bytes) -> WavInfo:
    """The header of a 16-bit PCM WAV file, checked against its actual length."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidInput("the audio is not a WAV file (expected a RIFF/WAVE header)")
    try:
        with wave.open(io.BytesIO(data)) as wav:
            info = WavInfo(wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes())
    except (wave.Error, EOFError, ValueError) as exc:
        raise InvalidInput(f"the WAV file cannot be read: {exc}") from exc
    if info.sample_width != 2:
        raise InvalidInput(f"the WAV file has {8 * info.sample_width}-bit samples; 16-bit PCM is required")
    if not 1 <= info.channels <= 8 or not 1000 <= info.sample_rate <= 384_000:
        raise InvalidInput("the WAV file's header is not plausible (channels or sample rate)")
    if info.frames == 0:
        raise InvalidInput("the WAV file has no audio")
    actual_frames = (len(data) - 44) // (info.channels * info.sample_width)
    if info.frames > actual_frames + info.sample_rate:  # the header claims more than the file holds
        raise InvalidInput("the WAV file's header claims more audio than the file contains")
    if info.seconds > MAX_AUDIO_SECONDS:
        raise InvalidInput(f"the audio is {info.seconds:.0f} s long; at most {MAX_AUDIO_SECONDS} s is accepted")
    return info


def image_info(data: bytes) -> ImageInfo:
    """The type and size of a PNG or JPEG image, read from its header and verified."""
    from PIL import Image, UnidentifiedImageError

    if data.startswith(PNG_MAGIC):
        content_type = "image/png"
    elif data.startswith(JPEG_MAGIC):
        content_type = "image/jpeg"
    else:
        raise InvalidInput("the image is neither a PNG nor a JPEG file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidInput(
                    f"the image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels are accepted"
                )
            image.verify()
    except InvalidInput:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"the image cannot be decoded: {exc}") from exc
    return ImageInfo(content_type, width, height)


def load_image(data: bytes):  # -> PIL.Image.Image, RGB
    """A checked image decoded to RGB pixels."""
    from PIL import Image

    image_info(data)
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def png_bytes(image) -> bytes:  # image: PIL.Image.Image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(samples_int16: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV file around raw little-endian samples."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples_int16)
    return buffer.getvalue()


# Signatures of formats we recognise but do not take: these get 415, not "malformed" (400).
_KNOWN_UNSUPPORTED: tuple[tuple[bytes, str], ...] = (
    (b"ID3", "audio/mpeg"),
    (b"\xff\xfb", "audio/mpeg"),
    (b"\xff\xf3", "audio/mpeg"),
    (b"OggS", "audio/ogg"),
    (b"fLaC", "audio/flac"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
)


def unsupported_format(data: bytes) -> str | None:
    """The media type of a file in a format we recognise but do not accept, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, media_type in _KNOWN_UNSUPPORTED:
        if data.startswith(magic):
            return media_type
    return None
