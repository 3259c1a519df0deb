"""`/v1/audio`: transcriptions (speech to text) and speech (text to speech), in OpenAI's format.

Audio crosses the platform as 16-bit PCM WAV: a transcription's upload is decoded to it here, and
speech is encoded from it here to the format the client asks for (`deployments/media.py`), both in a
worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import PlainTextResponse, Response

from deployments import media
from deployments.types import Segment, SpeechRequest, TranscribeRequest, TranscribeResult
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError
from serve_app.openai_format import MODEL_HEADER, answered_by, check_media
from serve_app.platform import Platform
from serve_app.schemas import SpeechRequestIn

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
GRANULARITIES = ("segment", "word")


def invalid_field(field: str, reason: str) -> ApiError:
    return ApiError(422, "validation_error", f"{field}: {reason}", [{"field": field, "reason": reason}])


@router.post("/audio/transcriptions", summary="Speech to text (OpenAI format)")
async def transcriptions(
    file: UploadFile = File(..., description="WAV (16-bit PCM), MP3, M4A, AAC, Ogg (Opus, Vorbis), WebM or FLAC"),
    model: str = Form("stt"),
    language: str | None = Form(None),
    prompt: str | None = Form(None, description="Text said before the audio, to steer spelling and style."),
    response_format: str = Form("json", description="json, text, verbose_json, srt or vtt"),
    temperature: float = Form(0.0, description="0 to 1; 0 raises it only where decoding fails, as OpenAI's."),
    timestamp_granularities: list[str] = Form(
        [], alias="timestamp_granularities[]", description="With verbose_json: segment (the default), word."
    ),
    stream: bool = Form(False, description="Not supported: true is a 422."),
    include: list[str] = Form([], alias="include[]", description="Not supported: any value is a 422."),
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(model, ("stt",))
    if response_format not in TRANSCRIPTION_FORMATS:
        raise invalid_field("response_format", f"must be one of {', '.join(TRANSCRIPTION_FORMATS)}")
    if not 0 <= temperature <= 1:
        raise invalid_field("temperature", "must be between 0 and 1")
    unknown = sorted(set(timestamp_granularities) - set(GRANULARITIES))
    if unknown:
        raise invalid_field("timestamp_granularities", f"{unknown[0]!r} is not one of segment, word")
    if timestamp_granularities and response_format != "verbose_json":
        raise invalid_field("timestamp_granularities", "timestamps come only with response_format verbose_json")
    if stream:
        raise invalid_field("stream", "transcriptions are not streamed; send stream=false")
    if include:
        raise invalid_field("include", "no extra outputs (logprobs) are available")
    audio = await asyncio.to_thread(check_media, await file.read(), "file", "audio")
    request = TranscribeRequest(
        audio=audio,
        language=language or None,
        prompt=prompt or None,
        temperature=temperature,
        word_timestamps="word" in timestamp_granularities,
    )
    result = await platform.call("stt", request, principal)
    if not result.segments and result.text:  # a backend that times nothing: one segment over the audio
        result.segments = [Segment(0.0, result.audio_seconds, result.text)]
    headers = {MODEL_HEADER: result.model}
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(media.subtitles(result.segments, response_format), headers=headers)
    if response_format == "text":
        return PlainTextResponse(result.text, headers=headers)
    if response_format == "verbose_json":
        return answered_by(result.model, verbose(result, timestamp_granularities or ["segment"]))
    return answered_by(result.model, {"text": result.text, "model": result.model})


def verbose(result: TranscribeResult, granularities: list[str]) -> dict[str, Any]:
    """OpenAI's `TranscriptionVerbose`: segments with their times and, when asked for, words."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": result.language,
        "duration": result.audio_seconds,
        "text": result.text,
        "model": result.model,
    }
    if "segment" in granularities:
        body["segments"] = [
            {"id": index, "start": segment.start, "end": segment.end, "text": segment.text}
            for index, segment in enumerate(result.segments)
        ]
    if "word" in granularities:
        body["words"] = [{"word": word.word, "start": word.start, "end": word.end} for word in result.words]
    return body


@router.post("/audio/speech", summary="Text to speech (OpenAI format: mp3, opus, aac, flac, wav or pcm)")
async def speech(
    body: SpeechRequestIn,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(body.model, ("tts",))
    if not body.input.strip():
        raise ApiError(400, "invalid_input", "the input text is empty", [{"field": "input", "reason": "empty"}])
    result = await platform.call("tts", SpeechRequest(text=body.input, voice=body.voice, speed=body.speed), principal)
    audio, content_type = await asyncio.to_thread(media.encode_audio, result.wav, body.response_format)
    return Response(content=audio, media_type=content_type, headers={MODEL_HEADER: result.model})
