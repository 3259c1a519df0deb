"""`embed`: text to a vector (JSON), on all-MiniLM-L6-v2; a sink in workflows."""

from __future__ import annotations

import json
from dataclasses import replace

from deployments.types import EmbedRequest, EmbedResult
from modalities.base import TEXT, VECTOR, VECTOR_TYPE, Modality, Output, Params
from scheduler.costs import CostModel, Usage

EMBEDDING_BYTES = 4096 * 9  # a vector of up to 4,096 dimensions, pickled as Python floats


class EmbedParams(Params):
    """The model has no knobs: any param is a 422."""


class Embed(Modality[EmbedRequest, EmbedResult, EmbedParams]):
    name = "embed"
    request_type = EmbedRequest
    result_type = EmbedResult
    params = EmbedParams
    consumes = TEXT
    produces = VECTOR
    content_type = VECTOR_TYPE
    cost_model = CostModel({"prompt_tokens": 1.0})
    backends = {"minilm": "deployments.embed:MiniLMBackend"}
    default_backends = ("minilm",)
    timeout_s = 120.0

    def build_request(self, params: EmbedParams, text: str, media: list[Output]) -> EmbedRequest:
        return EmbedRequest(texts=[text])

    def in_background(self, request: EmbedRequest) -> EmbedRequest:
        return replace(request, background=True)

    def output(self, result: EmbedResult) -> Output:
        vector = {"model": result.model, "embedding": result.vectors[0], "tokens": result.prompt_tokens}
        return Output(json.dumps(vector).encode(), self.content_type)

    def requested_usage(self, request: EmbedRequest) -> Usage:
        return Usage(characters=sum(len(t) for t in request.texts), output_tokens=0)

    def used(self, request: EmbedRequest, result: EmbedResult) -> Usage:
        return Usage(prompt_tokens=result.prompt_tokens, output_tokens=0)

    def payload_bound(self, request: EmbedRequest) -> int:
        return sum(4 * len(t) + EMBEDDING_BYTES for t in request.texts)


MODALITY = Embed()
