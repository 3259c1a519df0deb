"""Image generation backends: Stable Diffusion through diffusers, from the model hub or tiny and random.

`StableDiffusionBackend` loads a real pipeline from the Hugging Face hub (or its local cache);
`TinyRandomDiffusionBackend` builds a tiny `StableDiffusionPipeline` from configs with random
weights, so that the real text encoding, denoising loop and VAE decoding run with no network. Its
images are noise: it is a test fixture and says so in its name. Both share `DiffusionPainter`'s run
path, and `check_image_request` with Gemini's images (`deployments.gemini`).

Sizes: each backend makes images whose sides are multiples of 8 within its `SizeRange`. A
requested size it cannot make becomes the nearest one it can: each side is clamped to the range,
then rounded to the nearest multiple of 8 (halfway rounds up). Steps beyond the backend's
`max_steps` are lowered to it the same way; the result reports the size and steps actually used.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from deployments.media import png_bytes
from deployments.pic2text import load_from_hub, torch_dtype
from deployments.types import ImageRequest, ImageResult, InputTooLarge, InvalidInput, ModelUnavailable

log = logging.getLogger(__name__)

MAX_IMAGES = 4


@dataclass(frozen=True)
class SizeRange:
    """The image sizes a backend can make: each side a multiple of `multiple` in [min_side, max_side]."""

    min_side: int
    max_side: int
    multiple: int = 8

    def __post_init__(self) -> None:
        if self.min_side % self.multiple or self.max_side % self.multiple or not 0 < self.min_side <= self.max_side:
            raise ValueError(f"sides must be multiples of {self.multiple} with 0 < min_side <= max_side")

    def nearest(self, width: int, height: int) -> tuple[int, int]:
        """The size this range can make that is nearest to `width` × `height`."""
        return self._side(width), self._side(height)

    def _side(self, value: int) -> int:
        clamped = min(max(value, self.min_side), self.max_side)
        return (clamped + self.multiple // 2) // self.multiple * self.multiple


def check_image_request(request: ImageRequest) -> None:
    """Refuse what no image backend answers: an empty prompt, or `n` or `steps` out of range."""
    if not request.prompt.strip():
        raise InvalidInput("the prompt is empty")
    if request.n < 1 or request.steps < 1:
        raise InvalidInput("n and steps must be at least 1")
    if request.n > MAX_IMAGES:
        raise InputTooLarge(f"n is {request.n}; at most {MAX_IMAGES} images are made at once")


def byte_level_tokenizer(max_length: int) -> Any:
    """A CLIP tokenizer that needs no files: a byte-level vocabulary (every byte, alone and
    word-final, ids 2 and up; `<|startoftext|>` is 0, `<|endoftext|>` 1) and no merges, so any
    text tokenizes. For the random-weight fixtures, whose text encoders learned nothing anyway."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(symbol + "</w>" for symbol in symbols)]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[], model_max_length=max_length)


class DiffusionPainter:
    """The run path of the diffusers backends; a subclass says where the pipeline comes from.

    `threads` caps torch's intra-op threads for the whole process (torch has no per-model
    setting); None leaves torch's default.
    """

    name: str
    model: str

    def __init__(
        self,
        *,
        sizes: SizeRange,
        max_steps: int,
        guidance_scale: float,
        device: str = "cpu",
        dtype: str | None = None,
        threads: int | None = 1,
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.sizes = sizes
        self.max_steps = max_steps
        self.guidance_scale = guidance_scale
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self._pipeline: Any = None

    def build(self, dtype: Any) -> Any:
        """The text-to-image pipeline (a diffusers `DiffusionPipeline`)."""
        raise NotImplementedError

    def load(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        dtype = torch_dtype(self.dtype, self.device)
        pipeline = self.build(dtype)
        pipeline.set_progress_bar_config(disable=True)
        self._pipeline = pipeline.to(self.device, dtype)

    async def run(self, request: ImageRequest) -> ImageResult:
        if self._pipeline is None:
            raise ModelUnavailable(f"the {self.name} backend is not loaded")
        check_image_request(request)
        width, height = self.sizes.nearest(request.width, request.height)
        steps = min(request.steps, self.max_steps)
        seed = request.seed if request.seed is not None else secrets.randbits(31)
        images = await asyncio.to_thread(self._paint, request, width, height, steps, seed)
        return ImageResult(images=images, width=width, height=height, steps=steps, model=self.model)

    def _paint(self, request: ImageRequest, width: int, height: int, steps: int, seed: int) -> list[bytes]:
        import torch

        # One generator per image, on the CPU: image i depends on (seed, i) only, not on n or the device.
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(request.n)]
        with torch.inference_mode():
            output = self._pipeline(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                width=width,
                height=height,
                num_inference_steps=steps,
                guidance_scale=self.guidance_scale,
                num_images_per_prompt=request.n,
                generator=generators,
            )
        return [png_bytes(image) for image in output.images]


class StableDiffusionBackend(DiffusionPainter):
    """A Stable Diffusion pipeline (SD-Turbo by default) from the Hugging Face hub or its local cache.

    SD-Turbo makes a 512×512 image in 1 to 4 steps with no classifier-free guidance, which is
    what a CPU can afford; for another model (SD 1.5, SDXL, a local folder) set `guidance_scale`,
    `max_steps` and the sides to what it was trained for.
    """

    name = "stable_diffusion"

    def __init__(
        self,
        model: str = "stabilityai/sd-turbo",
        device: str = "cpu",
        dtype: str | None = None,
        max_steps: int = 4,
        guidance_scale: float = 0.0,
        min_side: int = 128,
        max_side: int = 512,
        threads: int | None = 1,
    ) -> None:
        super().__init__(
            sizes=SizeRange(min_side, max_side),
            max_steps=max_steps,
            guidance_scale=guidance_scale,
            device=device,
            dtype=dtype,
            threads=threads,
        )
        self.model = model

    def build(self, dtype: Any) -> Any:
        from diffusers import AutoPipelineForText2Image

        def load(name: str, local_files_only: bool) -> Any:
            return AutoPipelineForText2Image.from_pretrained(name, dtype=dtype, local_files_only=local_files_only)

        return load_from_hub(load, self.model, what="Stable Diffusion")


class TinyRandomDiffusionBackend(DiffusionPainter):
    """A tiny Stable Diffusion with random weights (a fixed seed): the real pipeline, images of noise.

    For tests and machines without the hub: 64×64 in well under a second. The CLIP tokenizer has a
    byte-level vocabulary (every byte, alone and word-final) and no merges, so any text tokenizes.
    """

    name = "tiny_random"
    model = "tiny-random-stable-diffusion"

    def __init__(self, seed: int = 0, max_steps: int = 50, threads: int | None = 1) -> None:
        super().__init__(
            sizes=SizeRange(32, 256),
            max_steps=max_steps,
            guidance_scale=7.5,
            device="cpu",
            dtype=None,
            threads=threads,
        )
        self.seed = seed

    def build(self, dtype: Any) -> Any:
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        tokenizer = byte_level_tokenizer(77)
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
        # A private RNG state: building the models must not reseed the rest of the process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            text_encoder = CLIPTextModel(text_config)
            unet = UNet2DConditionModel(
                sample_size=8,
                in_channels=4,
                out_channels=4,
                block_out_channels=(32, 64),
                layers_per_block=1,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32,
                attention_head_dim=8,
                norm_num_groups=32,
            )
            # Four blocks, as in the real VAE: latents are 1/8 of the image per side.
            vae = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                latent_channels=4,
                block_out_channels=(8, 16, 32, 32),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=1,
                norm_num_groups=8,
                sample_size=64,
            )
        scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        )
        pipeline = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        return pipeline
