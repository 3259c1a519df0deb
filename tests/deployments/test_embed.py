"""The sentence encoder on the real all-MiniLM-L6-v2 weights from its package."""

from __future__ import annotations

import asyncio
import math

import pytest

from deployments.embed import MiniLMBackend
from deployments.types import EmbedRequest, EmbedResult, InvalidInput
from tests.helpers import assert_lowest_priority


@pytest.fixture(scope="module")
def encoder() -> MiniLMBackend:
    backend = MiniLMBackend(batch_size=2)
    backend.load()
    return backend


def embed(encoder: MiniLMBackend, *texts: str) -> EmbedResult:
    return asyncio.run(encoder.run(EmbedRequest(list(texts))))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_unit_length_and_mean_similar_texts_are_close(encoder: MiniLMBackend) -> None:
    result = embed(encoder, "A man is eating food.", "A man is eating a piece of bread.", "The stock market fell.")
    assert result.model == "all-MiniLM-L6-v2" and len(result.vectors) == 3
    for vector in result.vectors:
        assert len(vector) == 384 and math.isclose(math.sqrt(cosine(vector, vector)), 1.0, rel_tol=1e-5)
    food, bread, market = result.vectors
    assert cosine(food, bread) > 0.6 > 0.2 > cosine(food, market)


def test_batches_and_padding_do_not_change_a_vector(encoder: MiniLMBackend) -> None:
    """Across batches of 2 and beside a longer text (padding), a text gets the vector it gets alone."""
    texts = ["short", "a somewhat longer sentence with more tokens in it", "third", "short"]
    together = embed(encoder, *texts).vectors
    alone = embed(encoder, "short").vectors[0]
    assert cosine(together[0], alone) == pytest.approx(1.0, abs=1e-5)
    assert cosine(together[3], alone) == pytest.approx(1.0, abs=1e-5)


def test_tokens_are_counted_and_long_texts_cut_at_the_model_length_when_asked(encoder: MiniLMBackend) -> None:
    assert embed(encoder, "hello world").prompt_tokens == 4  # [CLS] hello world [SEP]
    cut = asyncio.run(encoder.run(EmbedRequest(["word " * 1000], truncate=True)))
    assert cut.prompt_tokens == 256


def test_a_text_longer_than_the_window_is_refused_naming_the_limit(encoder: MiniLMBackend) -> None:
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(encoder.run(EmbedRequest(["fits", "word " * 300])))
    assert refused.value.status == 400
    assert "256" in refused.value.message
    assert refused.value.details == [{"field": "input.1", "reason": "302 tokens, over 256"}]
    # Exactly at the window is fine: [CLS] + 254 words + [SEP].
    assert embed(encoder, "word " * 254).prompt_tokens == 256


@pytest.mark.parametrize("texts", [[], ["fine", "  "]])
def test_empty_input_is_the_clients_mistake(encoder: MiniLMBackend, texts: list[str]) -> None:
    with pytest.raises(InvalidInput):
        asyncio.run(encoder.run(EmbedRequest(texts)))


def test_background_texts_get_the_same_vectors_from_a_thread_of_the_lowest_priority(encoder: MiniLMBackend) -> None:
    """A batch line's vector is the one an interactive call gets; it is computed at the lowest CPU
    priority (SCHED_IDLE), so it takes only the CPU that interactive calls leave."""
    texts = ["A man is eating food.", "The stock market fell."]
    foreground = embed(encoder, *texts)
    background = asyncio.run(encoder.run(EmbedRequest(texts, background=True)))
    for a, b in zip(foreground.vectors, background.vectors, strict=True):
        assert cosine(a, b) == pytest.approx(1.0, abs=1e-6)
    assert background.prompt_tokens == foreground.prompt_tokens
    assert_lowest_priority(encoder._background_threads)
