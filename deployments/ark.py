"""Volcengine Ark through its official SDK (`volcengine-ark-runtime`): Doubao (`llm`), Seedream
(`text2pic`) and Seedance (`text2video`).

The three backends share `ArkBackend`: one `AsyncArk` client, an optional `base_url` (the tests' fake
server), and one mapping from the SDK's failures to the platform's errors. The key is the `api_key`
argument when code builds a backend; on the platform it is ARK_API_KEY in the replica's environment,
which the SDK reads itself. The mapping:

- 400 and other client errors → `InvalidInput`; 401/403 and 404 (no such model) → `ModelUnavailable`
- 429, 5xx, connection errors → `BackendFailure`; timeouts → `BackendTimeout` (all retryable)

The SDK's own retries are off: the failover chain decides where the next attempt goes.

Seedance makes a video as a content-generation task: created, polled every `poll_s` for at most
`deadline_s` (then `BackendTimeout`, and the chain tries the next backend), then downloaded from the
URL the task gives. Its size and length are read from the MP4 itself.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from deployments.llm import check_request
from deployments.media import image_info, load_image, png_bytes, video_info
from deployments.text2pic import SizeRange, check_image_request
from deployments.text2video import check_video_request
from deployments.types import (
    STREAMING,
    BackendFailure,
    BackendTimeout,
    ImageRequest,
    ImageResult,
    InvalidInput,
    LLMChunk,
    LLMRequest,
    LLMResult,
    ModelError,
    ModelUnavailable,
    VideoRequest,
    VideoResult,
)

DEFAULT_BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"


def data_url(image: bytes) -> str:
    return f"data:{image_info(image).content_type};base64,{base64.b64encode(image).decode()}"


class ArkBackend:
    """What the Ark backends share: the SDK client, its endpoint and timeout, and error mapping."""

    name: str
    default_model: str

    def __init__(
        self,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.model = model or self.default_model
        self.api_key = api_key
        self.base_url = base_url or DEFAULT_BASE_URL
        self.timeout_s = timeout_s
        self._client: Any = None

    def load(self) -> None:
        from volcenginesdkarkruntime import AsyncArk

        try:
            # api_key None: the SDK reads ARK_API_KEY.
            self._client = AsyncArk(api_key=self.api_key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0)
        except AssertionError as exc:  # the SDK's answer when it finds no key
            raise ModelUnavailable(
                "no Volcengine Ark API key: set ARK_API_KEY in the environment of every Ray node, "
                f"e.g. from a Kubernetes Secret ({exc})"
            ) from exc

    @property
    def client(self) -> Any:
        if self._client is None:
            raise ModelUnavailable(f"the {self.name} backend ({self.model}) is not loaded")
        return self._client

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Raise the SDK's failures inside the block as the platform's errors."""
        from volcenginesdkarkruntime import _exceptions as ark_errors

        try:
            yield
        except ModelError:
            raise
        except ark_errors.ArkAPITimeoutError as exc:
            raise BackendTimeout(f"Ark ({self.model}) did not answer in time") from exc
        except ark_errors.ArkAPIConnectionError as exc:
            raise BackendFailure(f"Ark ({self.model}) cannot be reached: {exc}") from exc
        except ark_errors.ArkAPIStatusError as exc:
            message = f"Ark ({self.model}) answered {exc.status_code}: {exc.message}"
            if exc.status_code in (401, 403, 404):
                raise ModelUnavailable(message) from exc
            if exc.status_code == 429 or exc.status_code >= 500:
                raise BackendFailure(message) from exc
            raise InvalidInput(message) from exc
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"Ark ({self.model}) did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise BackendFailure(f"Ark ({self.model}) failed: {exc}") from exc


# ---------------------------------------------------------------- llm


class DoubaoLLMBackend(ArkBackend):
    """Doubao through Ark's chat API: text chats and completions, streamed or whole."""

    name = "doubao"
    default_model = "doubao-seed-1-6-flash-250828"
    capabilities = frozenset({STREAMING})

    def _messages(self, request: LLMRequest) -> list[dict[str, str]]:
        if request.messages is None:
            return [{"role": "user", "content": request.prompt or ""}]
        return [{"role": m.role, "content": m.content} for m in request.messages]

    def _options(self, request: LLMRequest) -> dict[str, Any]:
        options: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            options["stop"] = request.stop
        return options

    async def run(self, request: LLMRequest) -> LLMResult:
        check_request(request)
        with self.errors():
            answer = await self.client.chat.completions.create(**self._options(request))
        choice = answer.choices[0]
        usage = answer.usage
        return LLMResult(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=self.model,
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        check_request(request)
        with self.errors():
            chunks = await self.client.chat.completions.create(
                **self._options(request), stream=True, stream_options={"include_usage": True}
            )
            async for chunk in chunks:
                usage = chunk.usage
                choice = chunk.choices[0] if chunk.choices else None
                yield LLMChunk(
                    text=(choice.delta.content or "") if choice else "",
                    finish_reason=choice.finish_reason if choice else None,
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    completion_tokens=usage.completion_tokens if usage else None,
                    model=self.model,
                )


# ---------------------------------------------------------------- text2pic


class SeedreamImageBackend(ArkBackend):
    """Seedream through Ark's image generation API: one PNG per image, sides in [512, 2048]."""

    name = "seedream"
    default_model = "doubao-seedream-4-0-250828"
    sizes = SizeRange(512, 2048)

    async def run(self, request: ImageRequest) -> ImageResult:
        check_image_request(request)
        width, height = self.sizes.nearest(request.width, request.height)
        images: list[bytes] = []
        with self.errors():
            for index in range(request.n):
                seed = None if request.seed is None else request.seed + index
                answer = await self.client.images.generate(
                    model=self.model,
                    prompt=request.prompt,
                    size=f"{width}x{height}",
                    response_format="b64_json",
                    seed=seed,
                    watermark=False,
                )
                if not answer.data or not answer.data[0].b64_json:
                    raise BackendFailure(f"Ark ({self.model}) answered no image")
                data = base64.b64decode(answer.data[0].b64_json)
                images.append(png_bytes(load_image(data)))  # Seedream answers JPEG
        return ImageResult(images=images, width=width, height=height, steps=request.steps, model=self.model)


# ---------------------------------------------------------------- text2video


class SeedanceVideoBackend(ArkBackend):
    """Seedance through Ark's content-generation tasks; see the module docstring."""

    name = "seedance"
    default_model = "doubao-seedance-1-0-lite-t2v-250428"
    FINAL = ("succeeded", "failed", "cancelled", "expired")

    def __init__(
        self,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        poll_s: float = 5.0,
        deadline_s: float = 600.0,
        durations: tuple[int, ...] = (5, 10),
        resolution: str = "720p",
    ) -> None:
        super().__init__(model=model, api_key=api_key, base_url=base_url, timeout_s=timeout_s)
        self.poll_s = poll_s
        self.deadline_s = deadline_s
        self.durations = durations
        self.resolution = resolution

    def _content(self, request: VideoRequest) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if request.prompt.strip():
            content.append({"type": "text", "text": request.prompt})
        if request.image is not None:
            content.append({"type": "image_url", "image_url": {"url": data_url(request.image)}, "role": "first_frame"})
        return content

    async def run(self, request: VideoRequest) -> VideoResult:
        check_video_request(request)
        duration = min(self.durations, key=lambda d: (abs(d - request.seconds), d))
        ratio = "1:1" if request.width == request.height else "16:9" if request.width > request.height else "9:16"
        loop = asyncio.get_running_loop()
        with self.errors():
            created = await self.client.content_generation.tasks.create(
                model=self.model,
                content=self._content(request),
                duration=duration,
                ratio=ratio,
                resolution=self.resolution,
                seed=request.seed,
                watermark=False,
            )
            deadline = loop.time() + self.deadline_s
            while True:
                task = await self.client.content_generation.tasks.get(task_id=created.id)
                if task.status in self.FINAL:
                    break
                if loop.time() >= deadline:
                    raise BackendTimeout(f"Ark ({self.model}) made no video in {self.deadline_s:g} s")
                await asyncio.sleep(self.poll_s)
            if task.status != "succeeded":
                error = getattr(task, "error", None)
                raise BackendFailure(f"Ark ({self.model}) task {task.status}: {getattr(error, 'message', '')}")
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                response = await http.get(task.content.video_url)
                response.raise_for_status()
                data = response.content
        info = await asyncio.to_thread(video_info, data)
        fps = round(info.fps) or 24
        return VideoResult(
            video=data, width=info.width, height=info.height, frames=info.frames, fps=fps, steps=1, model=self.model
        )
