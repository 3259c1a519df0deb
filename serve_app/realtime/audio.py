"""Audio of a realtime session: pcm16 at the wire's 24 kHz, 16 kHz for VAD and `stt`, and Piper's
WAV at its own rate back to 24 kHz; and voice activity detection with silero-vad."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np

WIRE_RATE = 24_000  # OpenAI's pcm16: mono, 16-bit little-endian, 24 kHz
VAD_RATE = 16_000  # silero-vad's and Whisper's rate
VAD_FRAME = 512  # silero-vad takes 512 samples (32 ms) at 16 kHz


def resample(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    """Mono pcm16 from one rate to another, by linear interpolation: enough for speech that VAD
    and Whisper listen to, or that a person hears (no dependency beyond numpy)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
    if rate_in == rate_out or samples.size == 0:
        return pcm[: len(pcm) // 2 * 2]
    count = int(round(samples.size * rate_out / rate_in))
    positions = np.arange(count, dtype=np.float64) * (rate_in / rate_out)
    out = np.interp(positions, np.arange(samples.size), samples)
    return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


def wav_of(pcm: bytes, rate: int) -> bytes:
    """A mono 16-bit WAV file of pcm16 samples (what `stt` takes)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def pcm_of(wav_bytes: bytes, rate_out: int = WIRE_RATE) -> bytes:
    """The samples of a 16-bit WAV (`tts`'s answer) as mono pcm16 at `rate_out`."""
    with wave.open(io.BytesIO(wav_bytes), "rb") as source:
        channels, rate = source.getnchannels(), source.getframerate()
        frames = source.readframes(source.getnframes())
    if channels > 1:
        frames = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).mean(axis=1).astype("<i2").tobytes()
    return resample(frames, rate, rate_out)


def duration_ms(pcm: bytes, rate: int = WIRE_RATE) -> int:
    return len(pcm) // 2 * 1000 // rate


@dataclass
class VadEvent:
    """Speech started or stopped, at `ms` from the start of the session's audio.

    Between the two, `pause` says the speaker fell silent at `ms` (a `stop` at the same `ms`
    follows if the silence lasts the whole `silence_ms`), and `resume` that they went on: a
    session prepares its answer during the pause, so that the silence window is not waited
    for before the work starts."""

    kind: str  # "start", "pause", "resume" or "stop"
    ms: int


class Vad:
    """silero-vad over a stream of 16 kHz pcm16, one model state per session.

    The ONNX model: about 30 ms to load, a fraction of a millisecond per 32 ms frame, and its
    state lives in the wrapper, so sessions never share it. Blocking: feed it from a thread.
    """

    def __init__(self, threshold: float = 0.5, silence_ms: int = 500, origin_ms: int = 0, pause_ms: int = 0) -> None:
        from silero_vad import VADIterator, load_silero_vad

        self._iterator: Any = VADIterator(
            load_silero_vad(onnx=True),
            threshold=threshold,
            sampling_rate=VAD_RATE,
            min_silence_duration_ms=silence_ms,
            speech_pad_ms=0,
        )
        self._pending = b""
        self._origin_ms = origin_ms  # where on the session's timeline its first sample is
        # A `pause` is reported after this much silence (a `stop` after `silence_ms`).
        self._pause_samples = min(pause_ms, silence_ms) * VAD_RATE // 1000
        self._paused = False

    def feed(self, pcm16k: bytes) -> list[VadEvent]:
        """The starts and stops in the audio fed so far (a frame at a time)."""
        import torch

        self._pending += pcm16k
        events: list[VadEvent] = []
        frame_bytes = VAD_FRAME * 2
        while len(self._pending) >= frame_bytes:
            frame, self._pending = self._pending[:frame_bytes], self._pending[frame_bytes:]
            samples = torch.from_numpy(np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0)
            found = self._iterator(samples)
            if found and "start" in found:
                events.append(VadEvent("start", self._ms(found["start"])))
            elif found and "end" in found:
                self._paused = False
                events.append(VadEvent("stop", self._ms(found["end"])))
            elif self._paused and not self._iterator.temp_end:
                self._paused = False
                events.append(VadEvent("resume", self._ms(self._iterator.current_sample)))
            elif not self._paused and self._iterator.triggered and self._iterator.temp_end:
                # silero-vad's own silence mark: the `end` it reports later is its frame's start.
                silent_since = int(self._iterator.temp_end) - VAD_FRAME
                if self._iterator.current_sample - silent_since >= self._pause_samples:
                    self._paused = True
                    events.append(VadEvent("pause", self._ms(silent_since)))
        return events

    def _ms(self, sample: int) -> int:
        return self._origin_ms + max(0, int(sample)) * 1000 // VAD_RATE

    def reset(self) -> None:
        """Forget the speech in progress (after `input_audio_buffer.clear`); time goes on."""
        self._iterator.triggered = False
        self._iterator.temp_end = 0
        self._iterator.model.reset_states()
        self._pending = b""
        self._paused = False
