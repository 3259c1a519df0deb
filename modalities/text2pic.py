"""`text2pic`: text to image (PNG), on Stable Diffusion (diffusers), Gemini image generation or Seedream (Ark)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from deployments.types import ImageRequest, ImageResult
from modalities.base import IMAGE, SMALL_ANSWER_BYTES, TEXT, Modality, Output, Params, Seed
from scheduler.costs import CostModel, Usage

MAX_IMAGE_SIDE = 2048
Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
Steps = Annotated[int | None, Field(ge=1, le=100)]


class Text2PicParams(Params):
    width: Side = 256
    height: Side = 256
    steps: Steps = None
    seed: Seed = None
    negative_prompt: Annotated[str | None, Field(max_length=10_000)] = None


class Text2Pic(Modality[ImageRequest, ImageResult, Text2PicParams]):
    name = "text2pic"
    request_type = ImageRequest
    result_type = ImageResult
    params = Text2PicParams
    consumes = TEXT
    produces = IMAGE
    content_type = "image/png"
    cost_model = CostModel({"megapixel_steps": 1.0}, minimum=0.1)
    backends = {
        "stable_diffusion": "deployments.text2pic:StableDiffusionBackend",
        "tiny_random": "deployments.text2pic:TinyRandomDiffusionBackend",
        "gemini": "deployments.gemini:GeminiImageBackend",
        "seedream": "deployments.ark:SeedreamImageBackend",
    }
    default_backends = ("stable_diffusion",)
    offline_backends = ("tiny_random",)
    timeout_s = 600.0

    def build_request(self, params: Text2PicParams, text: str, media: list[Output]) -> ImageRequest:
        steps = {"steps": params.steps} if params.steps else {}
        return ImageRequest(
            prompt=text,
            width=params.width,
            height=params.height,
            seed=params.seed,
            negative_prompt=params.negative_prompt,
            **steps,
        )

    def output(self, result: ImageResult) -> Output:
        return Output(result.images[0], self.content_type)

    def requested_usage(self, request: ImageRequest) -> Usage:
        return Usage(images=request.n, steps=request.steps, megapixels=request.n * request.width * request.height / 1e6)

    def used(self, request: ImageRequest, result: ImageResult) -> Usage:
        count = len(result.images)
        return Usage(images=count, steps=result.steps, megapixels=count * result.width * result.height / 1e6)

    def payload_bound(self, request: ImageRequest) -> int:
        # A PNG holds at most about 4 bytes a pixel (RGB, filter bytes, headers).
        return request.n * request.width * request.height * 4 + SMALL_ANSWER_BYTES


MODALITY = Text2Pic()
