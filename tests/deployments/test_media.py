"""Media checks and conversions: malformed files and bombs are refused before any model sees them,
every speech format decodes back to the audio it was made from, uploads in each format decode to
the WAV the models take, and subtitles are well formed."""

from __future__ import annotations

import io
import math
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import av
import pytest
from PIL import Image

from deployments import media
from deployments.types import InvalidInput, Segment


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


# ---------------------------------------------------------------- audio formats

TONE_HZ = 440
TONE_SECONDS = 2.5
TOLERANCE_S = 0.05


def tone(seconds: float = TONE_SECONDS, rate: int = 22_050) -> bytes:
    """A 440 Hz tone at Piper's rate: its pitch survives any codec, so a decoder's output can be
    checked for more than its length."""
    samples = array("h", (int(8000 * math.sin(2 * math.pi * TONE_HZ * i / rate)) for i in range(int(seconds * rate))))
    return media.wav_bytes(samples.tobytes(), rate)


def pitch(samples: bytes, rate: int) -> float:
    """The frequency of a tone, from how often it rises through zero (with some hysteresis, so
    that a codec's noise around silence counts for nothing)."""
    rises, low = 0, False
    for value in array("h", samples):
        if value < -1000:
            low = True
        elif value > 1000 and low:
            rises, low = rises + 1, False
    return rises * rate / (len(samples) // 2)


@dataclass
class Decoded:
    container: str
    codec: str
    rate: int
    channels: int
    samples: bytes  # 16-bit mono

    @property
    def seconds(self) -> float:
        return len(self.samples) / 2 / self.rate


def decode(data: bytes) -> Decoded:
    """What any player gets out of a file: PyAV probes the format itself."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=stream.rate)
        chunks = [
            bytes(out.planes[0])[: 2 * out.samples]
            for frame in [*container.decode(stream), None]
            for out in resampler.resample(frame)
        ]
        return Decoded(container.format.name, stream.codec_context.name, stream.rate, stream.channels, b"".join(chunks))


def muxed(wav: bytes, container: str, codec: str, rate: int) -> bytes:
    """A WAV file in another container, as a client's recorder might make it (M4A, WebM)."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(wav), "r") as source, av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for frame in [*source.decode(audio=0), None]:
            for out in resampler.resample(frame):
                output.mux(stream.encode(out))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def silent_video() -> bytes:
    """A WebM file with a picture and no sound."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as output:
        stream = output.add_stream("libvpx-vp9", rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(3):
            output.mux(stream.encode(av.VideoFrame.from_image(Image.new("RGB", (16, 16)))))
        output.mux(stream.encode(None))
    return buffer.getvalue()


# response_format: (media type, container FFmpeg finds, codec, sample rate)
SPEECH_FORMATS = {
    "mp3": ("audio/mpeg", "mp3", "mp3float", 22_050),
    "opus": ("audio/ogg", "ogg", "opus", 48_000),
    "aac": ("audio/aac", "aac", "aac", 48_000),
    "flac": ("audio/flac", "flac", "flac", 22_050),
    "wav": ("audio/wav", "wav", "pcm_s16le", 22_050),
}


@pytest.mark.parametrize("fmt", SPEECH_FORMATS)
def test_speech_formats_decode_to_the_same_audio(fmt: str) -> None:
    data, content_type = media.encode_audio(tone(), fmt)

    decoded = decode(data)
    assert (content_type, decoded.container, decoded.codec, decoded.rate) == SPEECH_FORMATS[fmt]
    assert decoded.channels == 1
    assert decoded.seconds == pytest.approx(TONE_SECONDS, abs=TOLERANCE_S)
    assert pitch(decoded.samples, decoded.rate) == pytest.approx(TONE_HZ, rel=0.02)
    assert media.media_type(data) == content_type


def test_pcm_is_raw_24_khz_mono_16_bit() -> None:
    data, content_type = media.encode_audio(tone(), "pcm")

    assert content_type == "audio/pcm"
    assert len(data) % 2 == 0 and not data.startswith(b"RIFF")
    assert len(data) / 2 / media.PCM_RATE == pytest.approx(TONE_SECONDS, abs=TOLERANCE_S)
    assert pitch(data, media.PCM_RATE) == pytest.approx(TONE_HZ, rel=0.02)


def test_wav_is_kept_as_it_is() -> None:
    wav = tone()
    assert media.encode_audio(wav, "wav") == (wav, "audio/wav")
    assert media.to_wav(wav) is wav


def test_unknown_speech_format_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no audio format"):
        media.encode_audio(tone(), "wma")


UPLOADS = {
    "mp3": lambda wav: media.encode_audio(wav, "mp3")[0],
    "ogg opus": lambda wav: media.encode_audio(wav, "opus")[0],
    "adts aac": lambda wav: media.encode_audio(wav, "aac")[0],
    "flac": lambda wav: media.encode_audio(wav, "flac")[0],
    "m4a": lambda wav: muxed(wav, "ipod", "aac", 44_100),
    "webm opus": lambda wav: muxed(wav, "webm", "libopus", 48_000),
    "mp3 at 44.1 khz": lambda wav: muxed(wav, "mp3", "libmp3lame", 44_100),
}


@pytest.mark.parametrize("make", UPLOADS.values(), ids=UPLOADS.keys())
def test_uploads_decode_to_16_khz_mono_wav(make: Callable[[bytes], bytes]) -> None:
    wav = media.to_wav(make(tone()))

    info = media.wav_info(wav)
    assert (info.sample_rate, info.channels, info.sample_width) == (16_000, 1, 2)
    assert info.seconds == pytest.approx(TONE_SECONDS, abs=TOLERANCE_S)
    assert pitch(wav[44:], 16_000) == pytest.approx(TONE_HZ, rel=0.02)


def test_id3_tag_before_adts_is_still_aac() -> None:
    aac = media.encode_audio(tone(), "aac")[0]
    tagged = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10 + aac  # a 10-byte ID3v2 tag

    assert media.media_type(tagged) == "audio/aac"
    assert media.wav_info(media.to_wav(tagged)).seconds == pytest.approx(TONE_SECONDS, abs=TOLERANCE_S)


@pytest.mark.parametrize(
    "data", [png(), b"GIF89a" + b"\x00" * 40, b"%PDF-1.7\n" + b"x" * 40, b"#!AMR\n" + b"\x00" * 40, silent_video()]
)
def test_recognised_formats_that_are_not_audio_are_unsupported(data: bytes) -> None:
    with pytest.raises(media.UnsupportedMedia) as raised:
        media.to_wav(data)
    assert raised.value.status == 415


MALFORMED_AUDIO = {
    "text": b"hello, this is not audio" * 4,
    "mp3 tag and nothing": b"ID3\x03" + b"\x00" * 100,
    "ogg page of noise": b"OggS" + bytes(range(256)) * 2,
    "flac header cut": media.encode_audio(tone(), "flac")[0][:20],
    "bad wav": b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 40,
}


@pytest.mark.parametrize("data", MALFORMED_AUDIO.values(), ids=MALFORMED_AUDIO.keys())
def test_malformed_audio_is_invalid_not_unsupported(data: bytes) -> None:
    with pytest.raises(InvalidInput) as raised:
        media.to_wav(data)
    assert not isinstance(raised.value, media.UnsupportedMedia)


def test_long_audio_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "MAX_AUDIO_SECONDS", 2)
    with pytest.raises(InvalidInput, match="at most 2 s"):
        media.to_wav(media.encode_audio(tone(), "flac")[0])


def test_long_audio_whose_header_says_nothing_is_cut_off_while_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    flac = bytearray(media.encode_audio(tone(), "flac")[0])
    # STREAMINFO's last 36 bits before the MD5 are the sample count: 0 means "unknown".
    flac[8 + 13] &= 0xF0
    flac[8 + 14 : 8 + 18] = b"\x00\x00\x00\x00"
    monkeypatch.setattr(media, "MAX_AUDIO_SECONDS", 2)

    with pytest.raises(InvalidInput, match="longer than 2 s"):
        media.to_wav(bytes(flac))


def test_media_types_and_what_each_kind_refuses() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")
    mp3 = media.encode_audio(tone(), "mp3")[0]
    assert media.media_type(b"\xff\xfb\x90\x00") == "audio/mpeg"  # a frame with no ID3 tag
    assert media.media_type(b"\x00\x00\x00\x20ftypM4A ") == "video/mp4"
    assert media.unsupported_format(buffer.getvalue(), "image") == "image/gif"
    assert media.unsupported_format(mp3, "image") == "audio/mpeg"
    assert media.unsupported_format(png(), "image") is None
    assert media.unsupported_format(png(), "audio") == "image/png"
    assert media.unsupported_format(mp3, "audio") is None
    assert media.unsupported_format(b"unknown bytes", "audio") is None  # malformed, not unsupported


@pytest.mark.parametrize("speed", [0.25, 0.5, 1.3, 2.0, 4.0])
def test_time_stretch_changes_the_length_not_the_pitch(speed: float) -> None:
    samples = tone()[44:]

    stretched = media.time_stretch(samples, 22_050, speed)

    assert len(stretched) / len(samples) == pytest.approx(1 / speed, rel=0.02)
    assert pitch(stretched, 22_050) == pytest.approx(TONE_HZ, rel=0.02)


def test_time_stretch_at_speed_1_is_the_same() -> None:
    samples = tone()[44:]
    assert media.time_stretch(samples, 22_050, 1.0) is samples


# ---------------------------------------------------------------- subtitles

SEGMENTS = [
    Segment(0.0, 1.5, " Hello there."),
    Segment(1.5, 1.9, "  "),  # Whisper's empty segments make no cue
    Segment(1.9, 3661.0256, "Fish & <chips>\nto go."),
]


def test_srt_cues() -> None:
    assert media.subtitles(SEGMENTS, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,900 --> 01:01:01,026\nFish & <chips> to go.\n"
    )


def test_vtt_cues() -> None:
    assert media.subtitles(SEGMENTS, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
        "00:00:01.900 --> 01:01:01.026\nFish &amp; &lt;chips&gt; to go.\n"
    )


def test_subtitles_of_nothing() -> None:
    assert media.subtitles([], "vtt") == "WEBVTT\n\n"
    assert media.subtitles([], "srt") == ""
