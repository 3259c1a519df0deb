"""The diffusers backends: sizes, the tiny random pipeline end to end, the hub one offline and from a folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.media import image_info
from deployments.text2pic import SizeRange, StableDiffusionBackend, TinyRandomDiffusionBackend
from deployments.types import ImageRequest, InputTooLarge, InvalidInput, ModelUnavailable
from tests.helpers import record_connections


@pytest.fixture(scope="module")
def tiny() -> TinyRandomDiffusionBackend:
    backend = TinyRandomDiffusionBackend()
    backend.load()
    return backend


@pytest.fixture(scope="module")
def saved_tiny(tiny: TinyRandomDiffusionBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline saved as a hub-style folder, for the hub backend's loading code."""
    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny._pipeline.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("requested", "made"),
    [
        ((64, 64), (64, 64)),
        ((256, 256), (256, 256)),
        ((70, 50), (72, 48)),
        ((36, 35), (40, 32)),  # halfway rounds up
        ((1, 10_000), (32, 256)),
        ((-5, 0), (32, 32)),
    ],
)
def test_a_size_becomes_the_nearest_one_the_range_makes(requested: tuple[int, int], made: tuple[int, int]) -> None:
    assert SizeRange(32, 256).nearest(*requested) == made


@given(st.integers(-1000, 5000))
def test_the_nearest_side_is_in_range_and_within_half_a_step(side: int) -> None:
    sizes = SizeRange(64, 768)
    made, _ = sizes.nearest(side, 64)
    assert sizes.min_side <= made <= sizes.max_side
    assert made % 8 == 0
    assert abs(made - min(max(side, 64), 768)) <= 4


def test_a_range_must_be_multiples_of_eight() -> None:
    with pytest.raises(ValueError):
        SizeRange(30, 256)


# ---------------------------------------------------------------- the tiny pipeline


async def test_tiny_random_makes_64px_fast(tiny: TinyRandomDiffusionBackend) -> None:
    # About half a second alone (a benchmark's figure, not asserted here).
    result = await tiny.run(ImageRequest(prompt="a red cat", width=64, height=64, steps=20, seed=1))
    assert result.model == "tiny-random-stable-diffusion"
    assert len(result.images) == 1
    info = image_info(result.images[0])
    assert (info.content_type, info.width, info.height) == ("image/png", 64, 64)


async def test_images_have_the_nearest_size_it_can_make(tiny: TinyRandomDiffusionBackend) -> None:
    result = await tiny.run(ImageRequest(prompt="a blue dog", width=70, height=50, steps=2, n=2, seed=3))
    assert (result.width, result.height, result.steps) == (72, 48, 2)
    assert len(result.images) == 2
    for image in result.images:
        info = image_info(image)
        assert (info.content_type, info.width, info.height) == ("image/png", 72, 48)
    assert result.images[0] != result.images[1]  # each image has its own noise


async def test_a_seed_makes_the_same_images(tiny: TinyRandomDiffusionBackend) -> None:
    def request(seed: int) -> ImageRequest:
        return ImageRequest(prompt="a green house", negative_prompt="fog", width=32, height=48, steps=3, seed=seed)

    first = await tiny.run(request(42))
    again = await tiny.run(request(42))
    other = await tiny.run(request(43))
    assert first.images == again.images
    assert first.images != other.images


async def test_steps_beyond_the_maximum_are_lowered() -> None:
    backend = TinyRandomDiffusionBackend(max_steps=2)
    backend.load()
    result = await backend.run(ImageRequest(prompt="a boat", width=32, height=32, steps=40, seed=0))
    assert result.steps == 2


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (ImageRequest(prompt="   "), InvalidInput),
        (ImageRequest(prompt="a cat", n=0), InvalidInput),
        (ImageRequest(prompt="a cat", steps=0), InvalidInput),
        (ImageRequest(prompt="a cat", n=5), InputTooLarge),
    ],
    ids=["empty-prompt", "no-images", "no-steps", "too-many-images"],
)
async def test_requests_out_of_bounds_are_refused(
    tiny: TinyRandomDiffusionBackend, request_: ImageRequest, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await tiny.run(request_)


async def test_a_backend_not_loaded_is_unavailable() -> None:
    with pytest.raises(ModelUnavailable):
        await TinyRandomDiffusionBackend().run(ImageRequest(prompt="a cat"))


# ---------------------------------------------------------------- the hub backend


def test_the_hub_backend_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    connections = record_connections(monkeypatch)
    with pytest.raises(ModelUnavailable) as caught:
        StableDiffusionBackend().load()
    # Offline, not one connection is tried: no minutes of retries before the answer.
    assert connections == []
    message = caught.value.message
    assert "stabilityai/sd-turbo" in message
    assert "HF_HOME" in message
    assert "tiny_random" in message


async def test_the_hub_backend_loads_a_local_folder(tiny: TinyRandomDiffusionBackend, saved_tiny: Path) -> None:
    backend = StableDiffusionBackend(
        model=str(saved_tiny), guidance_scale=tiny.guidance_scale, max_steps=50, min_side=32, max_side=256
    )
    backend.load()
    request = ImageRequest(prompt="a yellow bird", width=40, height=40, steps=3, seed=5)
    result = await backend.run(request)
    assert (result.model, result.width, result.height) == (str(saved_tiny), 40, 40)
    assert result.images == (await tiny.run(request)).images


def test_the_hub_sizes_stop_at_its_maximum() -> None:
    assert StableDiffusionBackend().sizes.nearest(1024, 100) == (512, 128)
