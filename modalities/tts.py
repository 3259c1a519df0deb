"""`tts`: text to speech (WAV), on Piper or Google Cloud Text-to-Speech."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from deployments.types import MAX_SPEECH_CHARS, SpeechRequest, SpeechResult
from modalities.base import AUDIO, TEXT, Modality, Output, Params
from scheduler.costs import CostModel, Usage

# ~0.07 s of speech a character at 24 kHz, 16 bits: 3.4 kB; twice that.
WAV_BYTES_PER_CHARACTER = 8_000

Voice = Annotated[str | None, Field(max_length=64)]
Speed = Annotated[float, Field(ge=0.25, le=4.0)]


class TTSParams(Params):
    voice: Voice = None
    speed: Speed = 1.0


class TTS(Modality[SpeechRequest, SpeechResult, TTSParams]):
    name = "tts"
    request_type = SpeechRequest
    result_type = SpeechResult
    params = TTSParams
    consumes = TEXT
    produces = AUDIO
    content_type = "audio/wav"
    max_text = MAX_SPEECH_CHARS
    cost_model = CostModel({"characters": 1.0})
    backends = {
        "piper": "deployments.tts:PiperBackend",
        "google_tts": "deployments.tts:GoogleTTSBackend",
    }
    default_backends = ("piper",)

    def build_request(self, params: TTSParams, text: str, media: list[Output]) -> SpeechRequest:
        return SpeechRequest(text=text, voice=params.voice, speed=params.speed)

    def output(self, result: SpeechResult) -> Output:
        return Output(result.wav, self.content_type)

    def requested_usage(self, request: SpeechRequest) -> Usage:
        return Usage(characters=len(request.text))

    def used(self, request: SpeechRequest, result: SpeechResult) -> Usage:
        return Usage(characters=len(request.text), audio_seconds=result.audio_seconds)

    def payload_bound(self, request: SpeechRequest) -> int:
        return int(len(request.text) * WAV_BYTES_PER_CHARACTER / max(request.speed, 0.1))


MODALITY = TTS()
