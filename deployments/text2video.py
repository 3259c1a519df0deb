"""Video generation backends on diffusers: LTX-Video from the model hub, or tiny and random.

`LTXVideoBackend` loads LTX-Video (`LTXPipeline`, and `LTXImageToVideoPipeline` on the same weights
for a reference image) from the Hugging Face hub or its cache; `TinyRandomVideoBackend` builds the
same two pipelines from small configs with random weights, so that the real text encoding,
denoising loop and VAE decoding run offline in seconds. Its videos are noise: it is a test fixture
and says so in its name.

Both stream: a `Progress` chunk as each denoising step ends (from the pipeline's
`callback_on_step_end`), then the `VideoResult`. A consumer that stops listening (a cancelled
call) stops the pipeline at its next step: the callback raises, and the thread is free again.

Shapes: each backend makes sides that are multiples of 32 within its `SizeRange`, and
`frame_multiple × k + 1` frames (its VAE's temporal compression) up to `max_frames`, at its own
frame rate. A request it cannot make becomes the nearest one it can; the result says what it made.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from deployments.media import encode_mp4, load_image
from deployments.pic2text import load_from_hub, torch_dtype
from deployments.text2pic import SizeRange, byte_level_tokenizer
from deployments.types import InvalidInput, ModelUnavailable, Progress, VideoRequest, VideoResult

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised from the pipeline's step callback when nobody waits for the video any more."""


@dataclass(frozen=True)
class VideoPlan:
    """What a backend will make of a request: the nearest shape it can."""

    width: int
    height: int
    frames: int
    fps: int
    steps: int
    seed: int


@dataclass(frozen=True)
class VideoShape:
    """The videos a backend can make: sizes, frame counts (`frame_multiple × k + 1`) and its rate."""

    sizes: SizeRange
    max_frames: int
    frame_multiple: int
    fps: int
    max_steps: int

    def plan(self, request: VideoRequest) -> VideoPlan:
        width, height = self.sizes.nearest(request.width, request.height)
        wanted = max(1, round(request.seconds * self.fps))
        multiples = min(round((wanted - 1) / self.frame_multiple), (self.max_frames - 1) // self.frame_multiple)
        seed = request.seed if request.seed is not None else secrets.randbits(31)
        steps = min(request.steps, self.max_steps)
        return VideoPlan(width, height, multiples * self.frame_multiple + 1, self.fps, steps, seed)


def check_video_request(request: VideoRequest) -> None:
    """Refuse what no video backend answers: no prompt and no image, or no steps."""
    if not request.prompt.strip() and request.image is None:
        raise InvalidInput("a video needs a prompt or an image to start from")
    if request.steps < 1:
        raise InvalidInput("steps must be at least 1")


async def streamed(generate: Callable[[Callable[[int], None]], VideoResult], steps: int) -> AsyncIterator[Any]:
    """Run `generate(on_step)` in a thread, yielding `Progress` as it reports steps, then its result.

    When the consumer goes away (the call is cancelled), the next `on_step` raises `Interrupted`,
    which stops the pipeline within one step.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()
    done = [0]

    def on_step(step: int) -> None:
        if stop.is_set():
            raise Interrupted
        done[0] = step
        loop.call_soon_threadsafe(chunks.put_nowait, Progress(step, steps))

    def work() -> None:
        try:
            outcome: Any = generate(on_step)
        except Interrupted:
            log.info("video generation stopped after step %d of %d: nobody waits for it", done[0], steps)
            return
        except BaseException as exc:  # handed to the consumer, who raises it
            outcome = exc
        if not stop.is_set():
            loop.call_soon_threadsafe(chunks.put_nowait, outcome)

    loop.run_in_executor(None, work)
    try:
        yield Progress(0, steps)
        while True:
            chunk = await chunks.get()
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
            if not isinstance(chunk, Progress):
                return
    finally:
        stop.set()


class VideoDiffuser:
    """The run path of the diffusers video backends; a subclass says where the pipelines come from.

    `threads` caps torch's intra-op threads for the whole process (torch has no per-model setting).
    """

    name: str
    model: str

    def __init__(
        self,
        *,
        shape: VideoShape,
        guidance_scale: float,
        device: str = "cpu",
        dtype: str | None = None,
        threads: int | None = 1,
        max_sequence_length: int = 128,
        lazy: bool = False,
    ) -> None:
        self.shape = shape
        self.lazy = lazy
        self.guidance_scale = guidance_scale
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.max_sequence_length = max_sequence_length
        self._text_to_video: Any = None
        self._image_to_video: Any = None
        self._loaded = False
        self._building = asyncio.Lock()

    def build(self, dtype: Any) -> tuple[Any, Any]:
        """The text-to-video and image-to-video pipelines (sharing their components)."""
        raise NotImplementedError

    def load(self) -> None:
        """Build the pipelines now, or (`lazy`) at the first call: a fixture that every test
        session deploys should not cost every session its start-up."""
        self._loaded = True
        if not self.lazy:
            self._build()

    def _build(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        dtype = torch_dtype(self.dtype, self.device)
        text_to_video, image_to_video = self.build(dtype)
        for pipeline in (text_to_video, image_to_video):
            pipeline.set_progress_bar_config(disable=True)
        # Built (or loaded) in `dtype` already: only the device changes.
        self._text_to_video = text_to_video.to(self.device)
        self._image_to_video = image_to_video.to(self.device)

    async def stream(self, request: VideoRequest) -> AsyncIterator[Any]:
        if not self._loaded:
            raise ModelUnavailable(f"the {self.name} backend is not loaded")
        check_video_request(request)
        async with self._building:
            if self._text_to_video is None:
                await asyncio.to_thread(self._build)
        plan = self.shape.plan(request)
        image = load_image(request.image) if request.image is not None else None

        def generate(on_step: Callable[[int], None]) -> VideoResult:
            return self._generate(request, plan, image, on_step)

        async for chunk in streamed(generate, plan.steps):
            yield chunk

    async def run(self, request: VideoRequest) -> VideoResult:
        result: VideoResult | None = None
        async for chunk in self.stream(request):
            if isinstance(chunk, VideoResult):
                result = chunk
        assert result is not None  # the stream ends with its result or raises
        return result

    def _generate(
        self, request: VideoRequest, plan: VideoPlan, image: Any, on_step: Callable[[int], None]
    ) -> VideoResult:
        import torch

        def step_ended(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(step + 1)
            return {}

        options: dict[str, Any] = {"image": image.resize((plan.width, plan.height))} if image is not None else {}
        pipeline = self._image_to_video if image is not None else self._text_to_video
        with torch.inference_mode():
            output = pipeline(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                width=plan.width,
                height=plan.height,
                num_frames=plan.frames,
                frame_rate=plan.fps,
                num_inference_steps=plan.steps,
                guidance_scale=self.guidance_scale,
                generator=torch.Generator("cpu").manual_seed(plan.seed),
                output_type="np",
                max_sequence_length=self.max_sequence_length,
                callback_on_step_end=step_ended,
                **options,
            )
        frames = (output.frames[0] * 255).round().clip(0, 255).astype("uint8")
        video = encode_mp4(list(frames), plan.fps)
        return VideoResult(
            video=video,
            width=plan.width,
            height=plan.height,
            frames=len(frames),
            fps=plan.fps,
            steps=plan.steps,
            model=self.model,
        )


class LTXVideoBackend(VideoDiffuser):
    """LTX-Video (Lightricks, 2B parameters) from the Hugging Face hub or its local cache: a GPU model
    (`device: cuda`, `dtype: bfloat16` in the GPU config); on a CPU it runs, slowly.

    It makes 24 frames a second, `8k + 1` frames, sides that are multiples of 32 (trained at up
    to 1216×704); about 40 steps with guidance 3.
    """

    name = "ltx_video"

    def __init__(
        self,
        model: str = "Lightricks/LTX-Video",
        device: str = "cpu",
        dtype: str | None = None,
        max_steps: int = 50,
        guidance_scale: float = 3.0,
        min_side: int = 256,
        max_side: int = 1216,
        max_frames: int = 161,
        threads: int | None = 1,
    ) -> None:
        shape = VideoShape(SizeRange(min_side, max_side, 32), max_frames, 8, 24, max_steps)
        super().__init__(shape=shape, guidance_scale=guidance_scale, device=device, dtype=dtype, threads=threads)
        self.model = model

    def build(self, dtype: Any) -> tuple[Any, Any]:
        from diffusers import LTXImageToVideoPipeline, LTXPipeline

        def load(name: str, local_files_only: bool) -> Any:
            return LTXPipeline.from_pretrained(name, torch_dtype=dtype, local_files_only=local_files_only)

        text_to_video = load_from_hub(load, self.model, what="LTX-Video")
        return text_to_video, LTXImageToVideoPipeline(**text_to_video.components)


class TinyRandomVideoBackend(VideoDiffuser):
    """A tiny LTX-Video with random weights (a fixed seed): the real pipelines, videos of noise.

    For tests and machines without the hub: 64×64, 17 frames, 8 steps in about a second on a CPU.
    Its VAE compresses 4× in space and in time, so it makes `4k + 1` frames.
    """

    name = "tiny_random"
    model = "tiny-random-ltx-video"

    def __init__(
        self, seed: int = 0, max_steps: int = 50, max_frames: int = 33, max_side: int = 256, threads: int | None = 1
    ) -> None:
        shape = VideoShape(SizeRange(32, max_side, 32), max_frames, 4, 8, max_steps)
        super().__init__(shape=shape, guidance_scale=3.0, threads=threads, max_sequence_length=32, lazy=True)
        self.seed = seed

    def build(self, dtype: Any) -> tuple[Any, Any]:
        import torch
        from diffusers import (
            AutoencoderKLLTXVideo,
            FlowMatchEulerDiscreteScheduler,
            LTXImageToVideoPipeline,
            LTXPipeline,
            LTXVideoTransformer3DModel,
        )
        from transformers import T5Config, T5EncoderModel

        tokenizer = byte_level_tokenizer(self.max_sequence_length)
        text_config = T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=1,
            eos_token_id=1,
        )
        # A private RNG state: building the models must not reseed the rest of the process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            text_encoder = T5EncoderModel(text_config)
            transformer = LTXVideoTransformer3DModel(
                in_channels=8,
                out_channels=8,
                patch_size=1,
                patch_size_t=1,
                num_attention_heads=4,
                attention_head_dim=8,
                cross_attention_dim=32,
                num_layers=1,
                caption_channels=32,
            )
            vae = AutoencoderKLLTXVideo(
                in_channels=3,
                out_channels=3,
                latent_channels=8,
                block_out_channels=(8, 8, 8, 8),
                decoder_block_out_channels=(8, 8, 8, 8),
                layers_per_block=(1, 1, 1, 1, 1),
                decoder_layers_per_block=(1, 1, 1, 1, 1),
                spatio_temporal_scaling=(True, True, False, False),
                decoder_spatio_temporal_scaling=(True, True, False, False),
                decoder_inject_noise=(False,) * 5,
                upsample_residual=(False,) * 4,
                upsample_factor=(1,) * 4,
                timestep_conditioning=False,
                patch_size=1,
                patch_size_t=1,
                encoder_causal=True,
                decoder_causal=False,
            )
        models: tuple[Any, ...] = (text_encoder, transformer, vae)
        for model in models:
            model.eval()  # made from configs, they are in training mode: dropout would make noise of the noise
        components = {
            "scheduler": FlowMatchEulerDiscreteScheduler(),
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "transformer": transformer,
        }
        return LTXPipeline(**components), LTXImageToVideoPipeline(**components)
