"""How a caller's handle reaches a modality replica for one call: by value or by reference.

By value (`handle.options(_by_reference=False)`), Serve sends the call straight to the replica's
gRPC server instead of as a Ray actor task, and the answer comes back the same way: about 2 ms
less a call on a 2-core machine (`benchmarks/serve_overhead.py`). But Serve caps those messages at
4 MB each way (`RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH`), and a bigger one fails the call. So a
call goes by value only when its request and its answer are sure to stay far below the cap: a
chat, a sentence to embed or to speak, a short recording, a small image. The rest (long speech,
big pictures, many texts) go by reference, through Ray's object store, which has no such limit.
"""

from __future__ import annotations

from typing import Any

from deployments.types import (
    CaptionRequest,
    EmbedRequest,
    ImageRequest,
    LLMRequest,
    SpeechRequest,
    TranscribeRequest,
)

# A quarter of Serve's cap: the bounds below are estimates.
BY_VALUE_MAX_BYTES = 1 << 20
SMALL_ANSWER_BYTES = 64 * 1024  # a caption, a transcript
WAV_BYTES_PER_CHARACTER = 8_000  # ~0.07 s of speech a character at 24 kHz, 16 bits: 3.4 kB; twice that
EMBEDDING_BYTES = 4096 * 9  # a vector of up to 4,096 dimensions, pickled as Python floats


def payload_bound(request: Any) -> int:
    """An upper bound of the bytes one call carries: its request's payload and its answer."""
    if isinstance(request, LLMRequest):
        texts = [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]
        # UTF-8 takes at most 4 bytes a character; a token's text is a few characters.
        return 4 * sum(len(t) for t in texts) + 64 * request.max_tokens
    if isinstance(request, EmbedRequest):
        return sum(4 * len(t) + EMBEDDING_BYTES for t in request.texts)
    if isinstance(request, TranscribeRequest):
        return len(request.audio) + SMALL_ANSWER_BYTES
    if isinstance(request, SpeechRequest):
        return int(len(request.text) * WAV_BYTES_PER_CHARACTER / max(request.speed, 0.1))
    if isinstance(request, CaptionRequest):
        return sum(len(image) for image in request.images) + SMALL_ANSWER_BYTES
    if isinstance(request, ImageRequest):
        # A PNG holds at most about 4 bytes a pixel (RGB, filter bytes, headers).
        return request.n * request.width * request.height * 4 + SMALL_ANSWER_BYTES
    return BY_VALUE_MAX_BYTES + 1  # unknown: the object store


def by_value(request: Any) -> bool:
    return payload_bound(request) <= BY_VALUE_MAX_BYTES


def handle_for(handle: Any, request: Any) -> Any:
    """The handle to make this call with: by value when it is small, else the handle as it is."""
    return handle.options(_by_reference=False) if by_value(request) else handle
