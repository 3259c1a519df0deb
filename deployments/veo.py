"""Veo (`text2video`) on Vertex AI through google-genai: a long-running operation, polled, its video inline.

google-genai makes videos through Vertex AI only; with an API key and no project it uses Vertex
AI's express mode. `models.generate_videos` starts the operation; `operations.get` is asked every `poll_s` until it is
done, for at most `deadline_s` (then `BackendTimeout`, and the failover chain tries the next
backend). A failed operation is a `BackendFailure`; a video withheld by Veo's filters is the
client's `InvalidInput`. Vertex answers the video inline when no Cloud Storage bucket is named. The
size and length of the result are read from the MP4 itself.

Veo makes a few lengths (`durations`) in 16:9 or 9:16; a request gets the nearest of each. Its key is
GOOGLE_API_KEY or GEMINI_API_KEY in the replica's environment (a key with Vertex AI express mode),
which the SDK reads itself, as for every Gemini backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google import genai
from google.genai import types as genai_types

from deployments.gemini import GeminiBackend
from deployments.media import image_info, video_info
from deployments.text2video import check_video_request
from deployments.types import (
    BackendFailure,
    BackendTimeout,
    InvalidInput,
    ModelUnavailable,
    VideoRequest,
    VideoResult,
)


class VeoVideoBackend(GeminiBackend):
    """Veo through the Gemini API; see the module docstring."""

    name = "veo"
    default_model = "veo-3.0-fast-generate-001"

    def __init__(
        self,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        poll_s: float = 5.0,
        deadline_s: float = 600.0,
        durations: tuple[int, ...] = (4, 6, 8),
        resolution: str = "720p",
    ) -> None:
        super().__init__(model=model, api_key=api_key, base_url=base_url, timeout_s=timeout_s)
        self.poll_s = poll_s
        self.deadline_s = deadline_s
        self.durations = durations
        self.resolution = resolution

    def load(self) -> None:
        try:
            self._client = genai.Client(
                api_key=self.api_key,  # None: the SDK reads GOOGLE_API_KEY, then GEMINI_API_KEY
                vertexai=True,
                http_options=genai_types.HttpOptions(
                    base_url=self.base_url,
                    timeout=int(self.timeout_s * 1000),  # milliseconds
                    retry_options=genai_types.HttpRetryOptions(attempts=1),
                ),
            )
        except ValueError as exc:  # the SDK's answer when it finds no key nor project
            raise ModelUnavailable(
                f"no key for Veo: set GOOGLE_API_KEY or GEMINI_API_KEY in the environment of every Ray node ({exc})"
            ) from exc

    def video_config(self, request: VideoRequest) -> genai_types.GenerateVideosConfig:
        duration = min(self.durations, key=lambda d: (abs(d - request.seconds), d))
        return genai_types.GenerateVideosConfig(
            number_of_videos=1,
            duration_seconds=duration,
            aspect_ratio="16:9" if request.width >= request.height else "9:16",
            resolution=self.resolution,
            negative_prompt=request.negative_prompt,
            seed=request.seed,
        )

    async def run(self, request: VideoRequest) -> VideoResult:
        check_video_request(request)
        image = None
        if request.image is not None:
            image = genai_types.Image(image_bytes=request.image, mime_type=image_info(request.image).content_type)
        loop = asyncio.get_running_loop()
        with self.errors():
            source = genai_types.GenerateVideosSource(prompt=request.prompt or None, image=image)
            operation: Any = await self.client.aio.models.generate_videos(
                model=self.model, source=source, config=self.video_config(request)
            )
            deadline = loop.time() + self.deadline_s
            while not operation.done:
                if loop.time() >= deadline:
                    raise BackendTimeout(f"Veo ({self.model}) made no video in {self.deadline_s:g} s")
                await asyncio.sleep(self.poll_s)
                operation = await self.client.aio.operations.get(operation)
            if operation.error:
                message = operation.error.get("message", operation.error)
                raise BackendFailure(f"Veo ({self.model}) failed: {message}")
            response = operation.response
            videos = response.generated_videos if response is not None else None
            if not videos or videos[0].video is None:
                reasons = (response.rai_media_filtered_reasons if response is not None else None) or []
                raise InvalidInput(f"Veo ({self.model}) made no video: {'; '.join(reasons) or 'filtered'}")
            data = videos[0].video.video_bytes
            if not data:  # only a Cloud Storage URI, which this backend cannot read
                raise BackendFailure(f"Veo ({self.model}) answered no video bytes (a storage URI?)")
        info = await asyncio.to_thread(video_info, data)
        fps = round(info.fps) or 24
        return VideoResult(
            video=data, width=info.width, height=info.height, frames=info.frames, fps=fps, steps=1, model=self.model
        )
