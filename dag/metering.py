"""What a model call uses, read from its request (the estimate) and its result (the actual).

The bridge between the modality types and the scheduler's cost models; the ingress and the
workflow executor both meter calls through it, so an interactive call and a workflow node of the
same size cost the same.
"""

from __future__ import annotations

from typing import Any

from deployments import media
from deployments.types import (
    CaptionRequest,
    EmbedRequest,
    EmbedResult,
    ImageRequest,
    ImageResult,
    InvalidInput,
    LLMRequest,
    LLMResult,
    SpeechRequest,
    SpeechResult,
    TranscribeRequest,
    TranscribeResult,
)
from scheduler.costs import Usage


def requested_usage(request: Any) -> Usage:
    """The usage a request asks for, before it runs."""
    if isinstance(request, LLMRequest):
        texts = [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]
        return Usage(characters=sum(len(t) for t in texts), output_tokens=request.max_tokens)
    if isinstance(request, TranscribeRequest):
        try:
            seconds = media.wav_info(request.audio).seconds
        except InvalidInput:
            seconds = 0.0  # the replica refuses it; charge the minimum
        return Usage(audio_seconds=seconds)
    if isinstance(request, SpeechRequest):
        return Usage(characters=len(request.text))
    if isinstance(request, CaptionRequest):
        return Usage(images=len(request.images))
    if isinstance(request, ImageRequest):
        return Usage(images=request.n, steps=request.steps, megapixels=request.n * request.width * request.height / 1e6)
    if isinstance(request, EmbedRequest):
        return Usage(characters=sum(len(t) for t in request.texts), output_tokens=0)
    raise TypeError(f"no usage for {type(request).__name__}")


def used(request: Any, result: Any) -> Usage:
    """The usage a call really had, from what the backend reported."""
    if isinstance(result, LLMResult):
        return Usage(prompt_tokens=result.prompt_tokens, output_tokens=result.completion_tokens)
    if isinstance(result, TranscribeResult):
        return Usage(audio_seconds=result.audio_seconds)
    if isinstance(result, SpeechResult):
        return Usage(characters=len(request.text), audio_seconds=result.audio_seconds)
    if isinstance(result, EmbedResult):
        return Usage(prompt_tokens=result.prompt_tokens, output_tokens=0)
    if isinstance(result, ImageResult):
        count = len(result.images)
        return Usage(images=count, steps=result.steps, megapixels=count * result.width * result.height / 1e6)
    return requested_usage(request)
