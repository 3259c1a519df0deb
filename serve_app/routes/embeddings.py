"""`POST /v1/embeddings` (OpenAI's format: float or base64 vectors)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from deployments.types import EmbedRequest, EmbedResult
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError
from serve_app.openai_format import answered_by
from serve_app.platform import Platform
from serve_app.schemas import EmbeddingRequestIn

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


async def prepare_embedding(body: EmbeddingRequestIn, platform: Platform) -> EmbedRequest:
    """The embed request of a body, every check of the route done: shared by the route and batch lines."""
    await platform.resolve_model(body.model, ("embed",))
    texts = body.texts()
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        field = "input" if isinstance(body.input, str) else f"input.{empty[0]}"
        raise ApiError(400, "invalid_input", "an input text is empty", [{"field": field, "reason": "empty"}])
    # The replica refuses a `dimensions` that is not its model's before it embeds: a refused call is
    # not charged.
    return EmbedRequest(texts=texts, truncate=body.truncate, dimensions=body.dimensions)


def embedding_body(body: EmbeddingRequestIn, result: EmbedResult) -> dict[str, Any]:
    """OpenAI's embeddings list of a result."""

    def encode(vector: list[float]) -> list[float] | str:
        # OpenAI's base64 is the little-endian float32 array; its client asks for it by default.
        if body.encoding_format == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(vector)} for i, vector in enumerate(result.vectors)
        ],
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


@router.post("/embeddings", summary="Text embeddings (OpenAI format)")
async def embeddings(
    body: EmbeddingRequestIn,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    request = await prepare_embedding(body, platform)
    result: EmbedResult = await platform.call("embed", request, principal)
    return answered_by(result.model, embedding_body(body, result))
