"""`pic2text`: images to text (captions), on BLIP or Gemini vision."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from deployments.types import CaptionRequest, CaptionResult
from modalities.base import IMAGE, SMALL_ANSWER_BYTES, TEXT, TEXT_TYPE, Modality, Output, Params
from scheduler.costs import CostModel, Usage


class Pic2TextParams(Params):
    max_tokens: Annotated[int, Field(ge=1, le=256)] = 40


class Pic2Text(Modality[CaptionRequest, CaptionResult, Pic2TextParams]):
    name = "pic2text"
    request_type = CaptionRequest
    result_type = CaptionResult
    params = Pic2TextParams
    consumes = IMAGE
    produces = TEXT
    content_type = TEXT_TYPE
    media_inputs = (1, None)
    cost_model = CostModel({"images": 1.0})
    backends = {
        "blip": "deployments.pic2text:BlipBackend",
        "tiny_random": "deployments.pic2text:TinyRandomBlipBackend",
        "gemini": "deployments.gemini:GeminiCaptionBackend",
    }
    default_backends = ("blip",)
    offline_backends = ("tiny_random",)

    def build_request(self, params: Pic2TextParams, text: str, media: list[Output]) -> CaptionRequest:
        return CaptionRequest(images=[m.data for m in media], prompt=text, max_tokens=params.max_tokens)

    def output(self, result: CaptionResult) -> Output:
        return Output.of_text(result.text)

    def requested_usage(self, request: CaptionRequest) -> Usage:
        return Usage(images=len(request.images))

    def payload_bound(self, request: CaptionRequest) -> int:
        return sum(len(image) for image in request.images) + SMALL_ANSWER_BYTES


MODALITY = Pic2Text()
