"""The BLIP captioners: the tiny random one end to end, the hub one offline and from a local folder."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from deployments.pic2text import BlipBackend, TinyRandomBlipBackend
from deployments.types import CaptionRequest, InputTooLarge, InvalidInput, ModelUnavailable
from tests.helpers import record_connections


def encode(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def gradient(width: int = 96, height: int = 72) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk for a huge image, with no pixel data at all."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


PNG = encode(gradient(), "PNG")
JPEG = encode(gradient(80, 120), "JPEG")


@pytest.fixture(scope="module")
def tiny() -> TinyRandomBlipBackend:
    backend = TinyRandomBlipBackend()
    backend.load()
    return backend


@pytest.fixture(scope="module")
def saved_tiny(tiny: TinyRandomBlipBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a hub-style folder, for the hub backend's loading code."""
    folder = tmp_path_factory.mktemp("tiny-blip")
    tiny._model.save_pretrained(folder)
    tiny._processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("image", [PNG, JPEG], ids=["png", "jpeg"])
async def test_tiny_random_captions_an_image(tiny: TinyRandomBlipBackend, image: bytes) -> None:
    result = await tiny.run(CaptionRequest(images=[image], max_tokens=12))
    assert result.text.strip()
    assert "\n" not in result.text
    assert result.model == "tiny-random-blip"


async def test_several_images_give_one_caption_per_line(tiny: TinyRandomBlipBackend) -> None:
    result = await tiny.run(CaptionRequest(images=[PNG, JPEG, PNG], max_tokens=8))
    lines = result.text.split("\n")
    assert len(lines) == 3
    assert all(lines)
    assert lines[0] == lines[2]  # the same image, the same caption


async def test_a_prompt_conditions_the_caption(tiny: TinyRandomBlipBackend) -> None:
    result = await tiny.run(CaptionRequest(images=[PNG], prompt="a picture of", max_tokens=8))
    assert result.text.startswith("a picture of")


async def test_the_seed_fixes_the_random_weights(tiny: TinyRandomBlipBackend) -> None:
    request = CaptionRequest(images=[PNG], max_tokens=10)
    same, other = TinyRandomBlipBackend(seed=0), TinyRandomBlipBackend(seed=1)
    same.load()
    other.load()
    expected = (await tiny.run(request)).text
    assert (await same.run(request)).text == expected
    assert (await other.run(request)).text != expected


@pytest.mark.parametrize(
    "data",
    [b"this is not an image at all", PNG[: len(PNG) // 2], png_claiming(100_000, 100_000)],
    ids=["not-an-image", "truncated-png", "bomb-header"],
)
async def test_bad_images_are_invalid_input(tiny: TinyRandomBlipBackend, data: bytes) -> None:
    with pytest.raises(InvalidInput, match="image 2"):
        await tiny.run(CaptionRequest(images=[PNG, data]))


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (CaptionRequest(images=[]), InvalidInput),
        (CaptionRequest(images=[PNG], max_tokens=0), InvalidInput),
        (CaptionRequest(images=[PNG], max_tokens=10_000), InputTooLarge),
        (CaptionRequest(images=[PNG] * 17), InputTooLarge),
        (CaptionRequest(images=[PNG], prompt="a photograph of " * 200), InputTooLarge),
    ],
    ids=["no-image", "no-tokens", "too-many-tokens", "too-many-images", "prompt-too-long"],
)
async def test_requests_out_of_bounds_are_refused(
    tiny: TinyRandomBlipBackend, request_: CaptionRequest, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await tiny.run(request_)


async def test_a_backend_not_loaded_is_unavailable() -> None:
    with pytest.raises(ModelUnavailable):
        await TinyRandomBlipBackend().run(CaptionRequest(images=[PNG]))


def test_the_hub_backend_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    connections = record_connections(monkeypatch)
    with pytest.raises(ModelUnavailable) as caught:
        BlipBackend().load()
    # Offline, not one connection is tried: no minutes of retries before the answer.
    assert connections == []
    message = caught.value.message
    assert "Salesforce/blip-image-captioning-base" in message
    assert "HF_HOME" in message
    assert "tiny_random" in message


async def test_the_hub_backend_loads_a_local_folder(tiny: TinyRandomBlipBackend, saved_tiny: Path) -> None:
    backend = BlipBackend(model=str(saved_tiny))
    backend.load()
    request = CaptionRequest(images=[JPEG], max_tokens=10)
    result = await backend.run(request)
    assert result.model == str(saved_tiny)
    assert result.text == (await tiny.run(request)).text


def test_a_broken_local_folder_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="cannot be loaded"):
        BlipBackend(model=str(tmp_path)).load()
