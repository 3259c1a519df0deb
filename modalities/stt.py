"""`stt`: speech to text, on faster-whisper or Google Cloud Speech-to-Text."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from deployments import media
from deployments.types import InvalidInput, TranscribeRequest, TranscribeResult
from modalities.base import AUDIO, SMALL_ANSWER_BYTES, TEXT, TEXT_TYPE, Modality, Output, Params
from scheduler.costs import CostModel, Usage


class STTParams(Params):
    language: Annotated[str | None, Field(max_length=16)] = None


class STT(Modality[TranscribeRequest, TranscribeResult, STTParams]):
    name = "stt"
    request_type = TranscribeRequest
    result_type = TranscribeResult
    params = STTParams
    consumes = AUDIO
    produces = TEXT
    content_type = TEXT_TYPE
    media_inputs = (1, 1)
    cost_model = CostModel({"audio_seconds": 1.0}, minimum=0.1)
    backends = {
        "faster_whisper": "deployments.stt:FasterWhisperBackend",
        "google_speech": "deployments.stt:GoogleSpeechBackend",
    }
    default_backends = ("faster_whisper",)

    def build_request(self, params: STTParams, text: str, media: list[Output]) -> TranscribeRequest:
        return TranscribeRequest(audio=media[0].data, language=params.language)

    def output(self, result: TranscribeResult) -> Output:
        return Output.of_text(result.text)

    def requested_usage(self, request: TranscribeRequest) -> Usage:
        try:
            seconds = media.wav_info(request.audio).seconds
        except InvalidInput:
            seconds = 0.0  # the replica refuses it; charge the minimum
        return Usage(audio_seconds=seconds)

    def used(self, request: TranscribeRequest, result: TranscribeResult) -> Usage:
        return Usage(audio_seconds=result.audio_seconds)

    def payload_bound(self, request: TranscribeRequest) -> int:
        return len(request.audio) + SMALL_ANSWER_BYTES


MODALITY = STT()
