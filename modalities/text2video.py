"""`text2video`: text to video (MP4), or image to video from a reference image, on diffusers (LTX-Video),
Gemini Veo or Volcengine Ark (Seedance).

Its calls are long: they stream `Progress` chunks (one per denoising step) before their result, so a
task's record follows the real steps, and a cancelled call stops within one step.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from deployments.types import InvalidInput, VideoRequest, VideoResult
from modalities.base import IMAGE, TEXT, VIDEO, Modality, Output, Params, Seed
from scheduler.costs import CostModel, Usage

MAX_VIDEO_SIDE = 1920
MAX_SECONDS = 60.0
Side = Annotated[int, Field(ge=16, le=MAX_VIDEO_SIDE)]


class Text2VideoParams(Params):
    seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS)] = 4.0
    width: Side = 256
    height: Side = 256
    fps: Annotated[int, Field(ge=1, le=60)] = 8
    steps: Annotated[int | None, Field(ge=1, le=100)] = None
    seed: Seed = None
    negative_prompt: Annotated[str | None, Field(max_length=10_000)] = None


class Text2Video(Modality[VideoRequest, VideoResult, Text2VideoParams]):
    name = "text2video"
    request_type = VideoRequest
    result_type = VideoResult
    params = Text2VideoParams
    consumes = TEXT
    produces = VIDEO
    content_type = "video/mp4"
    media_inputs = (0, 1)  # an image makes it image-to-video
    media_kind = IMAGE
    # Frames are folded into the megapixels: a video costs what its frames would as images.
    cost_model = CostModel({"megapixel_steps": 1.0}, minimum=0.1)
    backends = {
        "ltx_video": "deployments.text2video:LTXVideoBackend",
        "tiny_random": "deployments.text2video:TinyRandomVideoBackend",
        "veo": "deployments.veo:VeoVideoBackend",
        "seedance": "deployments.ark:SeedanceVideoBackend",
    }
    default_backends = ("ltx_video",)
    offline_backends = ("tiny_random",)
    timeout_s = 900.0  # a cloud backend answers only once its whole video is made
    reports_progress = True

    def build_request(self, params: Text2VideoParams, text: str, media: list[Output]) -> VideoRequest:
        image = media[0].data if media else None
        if not text.strip() and image is None:
            raise InvalidInput("a video needs a prompt or an image to start from")
        steps = {"steps": params.steps} if params.steps else {}
        return VideoRequest(
            prompt=text,
            seconds=params.seconds,
            width=params.width,
            height=params.height,
            fps=params.fps,
            seed=params.seed,
            negative_prompt=params.negative_prompt,
            image=image,
            **steps,
        )

    def output(self, result: VideoResult) -> Output:
        return Output(result.video, self.content_type)

    def requested_usage(self, request: VideoRequest) -> Usage:
        return Usage(steps=request.steps, megapixels=request.frames * request.width * request.height / 1e6)

    def used(self, request: VideoRequest, result: VideoResult) -> Usage:
        return Usage(steps=result.steps, megapixels=result.frames * result.width * result.height / 1e6)

    def details(self, result: VideoResult) -> dict[str, Any]:
        return {
            "width": result.width,
            "height": result.height,
            "frames": result.frames,
            "fps": result.fps,
            "seconds": result.seconds,
            "steps": result.steps,
            "model": result.model,
        }

    # payload_bound: unbounded (the default): a video, and its reference image, go by reference.


MODALITY = Text2Video()
