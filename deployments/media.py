"""Checks and conversions of the media that cross the platform: audio, PNG and JPEG images, subtitles,
and video (MP4 with H.264, its thumbnail and spritesheet PNGs).

Inside the platform audio is a 16-bit PCM WAV file. At the door, `to_wav` decodes the compressed
formats clients send (MP3, M4A, Ogg, WebM, FLAC) with PyAV, and `encode_audio` encodes speech to
the format a client asks for.

Every check raises `InvalidInput` with a reason a person can act on, so that a malformed file is a
4xx at the door, never a crash inside a model.
"""

from __future__ import annotations

import io
import os
import tempfile
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, cast

from deployments.types import InvalidInput, Segment

if TYPE_CHECKING:
    import av.audio.frame
    import PIL.Image
    from av.audio.stream import AudioStream
    from PIL.Image import Image as PILImage

# A decoded image larger than this is refused before its pixels are read (a "decompression bomb").
MAX_IMAGE_PIXELS = 4096 * 4096
# Audio longer than this is refused: the header alone decides, before the samples are read (and a
# compressed file whose header lies is cut off while it is decoded).
MAX_AUDIO_SECONDS = 30 * 60
# What `to_wav` decodes to: Whisper's own rate, mono.
TRANSCRIBE_RATE = 16_000
# OpenAI's `pcm`: raw 16-bit little-endian mono samples at this rate, with no header.
PCM_RATE = 24_000

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


def load_image(data: bytes) -> PILImage:  # RGB
    """A checked image decoded to RGB pixels."""
    from PIL import Image

    image_info(data)
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def png_bytes(image: PILImage) -> bytes:
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


class UnsupportedMedia(InvalidInput):
    """A file in a format we recognise but do not take (an image sent as audio, a video without sound)."""

    code = "unsupported_media_type"
    status = 415


# Signatures of the formats the platform recognises, as the media type it names them by.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (PNG_MAGIC, "image/png"),
    (JPEG_MAGIC, "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"%PDF", "application/pdf"),
    (b"#!AMR", "audio/amr"),
    (b"OggS", "audio/ogg"),
    (b"fLaC", "audio/flac"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),  # EBML: WebM and Matroska
)
IMAGE_TYPES = ("image/png", "image/jpeg")
# The compressed audio `to_wav` reads, with the FFmpeg demuxer named for each. Naming it, instead of
# letting FFmpeg probe, keeps the demuxers that open further files or URLs (HLS, concat) away from
# uploads.
AUDIO_DEMUXERS = {
    "audio/mpeg": "mp3",
    "audio/aac": "aac",  # ADTS
    "audio/ogg": "ogg",  # Opus, Vorbis, FLAC in Ogg
    "audio/flac": "flac",
    "video/mp4": "mov",  # M4A, MP4 with a sound track
    "video/webm": "matroska",  # WebM (Opus, Vorbis), Matroska
}
AUDIO_TYPES = ("audio/wav", *AUDIO_DEMUXERS)
AUDIO_FORMATS = "WAV (16-bit PCM), MP3, M4A, AAC, Ogg, WebM or FLAC"


def media_type(data: bytes) -> str | None:
    """The media type a file's first bytes show, for the formats the platform knows; else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"ID3") and len(data) >= 10:
        # An ID3v2 tag (its size is four 7-bit bytes) may stand before MP3 or ADTS frames.
        size = int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big")
        return media_type(data[10 + size :]) or "audio/mpeg"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # an MPEG audio frame sync
        return "audio/aac" if data[1] & 0x06 == 0 else "audio/mpeg"  # layer 0 is ADTS AAC
    for magic, known in _SIGNATURES:
        if data.startswith(magic):
            return known
    return None


def unsupported_format(data: bytes, kind: str) -> str | None:
    """The media type of a file in a format we recognise but do not take as `kind` ("audio" or
    "image"), else None: a file of an unknown format is not refused here, but found malformed."""
    known = media_type(data)
    accepted = AUDIO_TYPES if kind == "audio" else IMAGE_TYPES
    return known if known is not None and known not in accepted else None


def to_wav(data: bytes) -> bytes:
    """Audio in any format we take as a 16-bit PCM WAV file: a WAV file is checked and kept as it
    is; the compressed formats (`AUDIO_DEMUXERS`) are decoded with PyAV to mono at 16 kHz."""
    known = media_type(data)
    if known is None:
        raise InvalidInput(f"the file is not audio in a format we read: {AUDIO_FORMATS}")
    if known not in AUDIO_TYPES:
        raise UnsupportedMedia(f"{known} is not supported; send {AUDIO_FORMATS}")
    if known == "audio/wav":
        wav_info(data)
        return data
    return wav_bytes(_decode(data, AUDIO_DEMUXERS[known]), TRANSCRIBE_RATE)


def _decode(data: bytes, demuxer: str) -> bytes:
    """The first audio track of a file, as 16-bit mono samples at `TRANSCRIBE_RATE`."""
    import av

    limit = MAX_AUDIO_SECONDS * TRANSCRIBE_RATE
    samples: list[bytes] = []
    frames = 0
    try:
        with av.open(io.BytesIO(data), "r", format=demuxer) as container:
            if not container.streams.audio:
                raise UnsupportedMedia("the file has no audio track")
            stream = container.streams.audio[0]
            seconds = (container.duration or 0) / av.time_base
            if seconds > MAX_AUDIO_SECONDS:
                raise InvalidInput(f"the audio is {seconds:.0f} s long; at most {MAX_AUDIO_SECONDS} s is accepted")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=TRANSCRIBE_RATE)
            for frame in _then_flush(container.decode(stream)):
                for out in resampler.resample(frame):
                    samples.append(bytes(out.planes[0])[: 2 * out.samples])
                    frames += out.samples
                if frames > limit:  # the header understated the length
                    raise InvalidInput(f"the audio is longer than {MAX_AUDIO_SECONDS} s, the most accepted")
    except av.FFmpegError as exc:
        raise InvalidInput(f"the audio cannot be decoded ({exc.strerror})") from exc
    if frames == 0:
        raise InvalidInput("the file has no audio")
    return b"".join(samples)


def _then_flush(frames: Iterator[av.audio.frame.AudioFrame]) -> Iterator[av.audio.frame.AudioFrame | None]:
    """The frames, then None, which tells a resampler to give out what it still holds."""
    yield from frames
    yield None


@dataclass(frozen=True)
class AudioFormat:
    """How one `response_format` of `/v1/audio/speech` is made: FFmpeg's muxer and encoder."""

    muxer: str
    codec: str
    content_type: str
    rate: int | None = None  # None keeps the speech's own rate
    bit_rate: int | None = None


SPEECH_FORMATS = {
    "mp3": AudioFormat("mp3", "libmp3lame", "audio/mpeg", bit_rate=64_000),
    "opus": AudioFormat("ogg", "libopus", "audio/ogg", rate=48_000, bit_rate=32_000),  # Ogg Opus
    # ADTS cannot say how many samples the encoder's priming adds (1024): at 48 kHz a decoder
    # plays at most 43 ms more than was spoken.
    "aac": AudioFormat("adts", "aac", "audio/aac", rate=48_000, bit_rate=64_000),
    "flac": AudioFormat("flac", "flac", "audio/flac"),
}
SPEECH_CONTENT_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm"} | {
    name: spec.content_type for name, spec in SPEECH_FORMATS.items()
}


def encode_audio(wav: bytes, fmt: str) -> tuple[bytes, str]:
    """A 16-bit PCM WAV file (speech, mono) in one of OpenAI's speech formats, and its media type.

    `wav` is kept as it is; `pcm` is the raw samples at 24 kHz mono (as OpenAI's); `mp3`, `opus`
    (in Ogg), `aac` (ADTS) and `flac` are encoded with PyAV.
    """
    import av

    if fmt == "wav":
        return wav, "audio/wav"
    if fmt != "pcm" and fmt not in SPEECH_FORMATS:
        raise InvalidInput(f"no audio format {fmt!r}; one of {', '.join(SPEECH_CONTENT_TYPES)}")
    info = wav_info(wav)
    if fmt == "pcm":
        return _resampled(wav, av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)), "audio/pcm"
    spec = SPEECH_FORMATS[fmt]
    rate = spec.rate or info.sample_rate
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=spec.muxer) as output:
        stream = cast("AudioStream", output.add_stream(spec.codec, rate=rate, layout="mono"))
        if spec.bit_rate:
            stream.bit_rate = spec.bit_rate
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for frame in _resampled_frames(wav, resampler):
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue(), spec.content_type


def _resampled_frames(wav: bytes, resampler: av.AudioResampler) -> Iterator[av.audio.frame.AudioFrame]:
    import av

    with av.open(io.BytesIO(wav), "r", format="wav") as container:
        for frame in _then_flush(container.decode(audio=0)):
            yield from resampler.resample(frame)


def _resampled(wav: bytes, resampler: av.AudioResampler) -> bytes:
    return b"".join(bytes(frame.planes[0])[: 2 * frame.samples] for frame in _resampled_frames(wav, resampler))


def time_stretch(samples: bytes, sample_rate: int, speed: float) -> bytes:
    """16-bit mono samples played `speed` times as fast, at the same pitch (FFmpeg's `atempo`)."""
    import av.filter

    if speed == 1:
        return samples
    # One `atempo` stretches well by 0.5 to 2 (beyond 2 it drops samples): chain them for the rest.
    steps = []
    while speed > 2:
        steps.append(2.0)
        speed /= 2
    while speed < 0.5:
        steps.append(0.5)
        speed /= 0.5
    steps.append(speed)
    graph = av.filter.Graph()
    node = graph.add_abuffer(format="s16", sample_rate=sample_rate, layout="mono", time_base=Fraction(1, sample_rate))
    for step in steps:
        tempo = graph.add("atempo", f"{step:.6f}")
        node.link_to(tempo)
        node = tempo
    node.link_to(graph.add("abuffersink"))
    graph.configure()
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples) // 2)
    frame.planes[0].update(samples)
    frame.sample_rate = sample_rate
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    graph.push(frame)
    graph.push(None)
    stretched = []
    while True:
        try:
            out = cast("av.AudioFrame", graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            break
        stretched.append(bytes(out.planes[0])[: 2 * out.samples])
    return b"".join(stretched)


# ---------------------------------------------------------------- subtitles


def subtitles(segments: Sequence[Segment], fmt: str) -> str:
    """A transcript's segments as SubRip (`srt`) or WebVTT (`vtt`) cues."""
    cues = []
    for number, segment in enumerate((s for s in segments if s.text.strip()), start=1):
        timing = f"{_timestamp(segment.start, fmt)} --> {_timestamp(max(segment.end, segment.start), fmt)}"
        text = " ".join(segment.text.split())  # a blank line would end the cue
        if fmt == "vtt":  # cue text is markup in WebVTT
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        cues.append(f"{number}\n{timing}\n{text}\n" if fmt == "srt" else f"{timing}\n{text}\n")
    header = "WEBVTT\n\n" if fmt == "vtt" else ""
    return header + "\n".join(cues)


def _timestamp(seconds: float, fmt: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    seconds_part, millis = divmod(millis, 1000)
    separator = "," if fmt == "srt" else "."
    return f"{hours:02d}:{minutes:02d}:{seconds_part:02d}{separator}{millis:03d}"


# ---------------------------------------------------------------- video

MP4_TYPE = "video/mp4"
# A spritesheet shows at most this many frames, evenly spaced, in rows of `SPRITE_COLUMNS`.
SPRITE_FRAMES = 16
SPRITE_COLUMNS = 4


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int
    fps: float


def encode_mp4(frames: Sequence[object], fps: int) -> bytes:
    """RGB frames (H×W×3 uint8 arrays, all one size) as an MP4 file: H.264 (libx264), yuv420p,
    which every browser plays. Sides are cut to even numbers, as yuv420p needs."""
    import av
    import numpy as np

    arrays = [np.asarray(frame, dtype=np.uint8) for frame in frames]
    if not arrays:
        raise ValueError("a video needs at least one frame")
    height, width = (arrays[0].shape[0] // 2) * 2, (arrays[0].shape[1] // 2) * 2
    # faststart puts the index before the data, so a browser plays before the file has arrived; FFmpeg
    # moves it by reopening the file by name, so the file is a real one.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "video.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "20"}
            for array in arrays:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array[:height, :width, :3]), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as file:
            return file.read()


def video_frames(data: bytes, limit: int | None = None) -> list[PIL.Image.Image]:
    """The decoded frames of a video file as PIL images (the first `limit` of them)."""
    import av

    frames: list[PIL.Image.Image] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_image())
                if limit is not None and len(frames) >= limit:
                    break
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidInput(f"the video cannot be decoded: {exc}") from exc
    if not frames:
        raise InvalidInput("the video has no frames")
    return frames


def video_info(data: bytes) -> VideoInfo:
    """The size, frame count (every frame decoded and counted) and rate of a video file."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            count = sum(1 for _ in container.decode(video=0))
            return VideoInfo(stream.codec_context.width, stream.codec_context.height, count, fps)
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidInput(f"the video cannot be decoded: {exc}") from exc


def thumbnail_png(video: bytes) -> bytes:
    """The first frame of a video, as a PNG."""
    return png_bytes(video_frames(video, limit=1)[0])


def spritesheet_png(video: bytes) -> bytes:
    """A PNG grid of up to `SPRITE_FRAMES` frames of a video, evenly spaced, row by row."""
    from PIL import Image

    frames = video_frames(video)
    count = min(SPRITE_FRAMES, len(frames))
    chosen = [frames[i * len(frames) // count] for i in range(count)]
    width, height = chosen[0].size
    columns = min(SPRITE_COLUMNS, count)
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * width, rows * height))
    for index, frame in enumerate(chosen):
        sheet.paste(frame, ((index % columns) * width, (index // columns) * height))
    return png_bytes(sheet)
