"""Calls whose request or answer is larger than Serve's 4 MB gRPC message cap still answer.

The ingress sends small calls to the replicas by value, over Serve's gRPC channel, which refuses
a message over 4 MB (modalities/transport.py); these go by reference, through the object store.
"""

from __future__ import annotations

import io
import os

import httpx
import pytest
from PIL import Image
from ray import serve

from deployments import media
from deployments.types import CaptionRequest, SpeechRequest
from modalities.transport import handle_for
from tests.conftest import make_token

pytestmark = pytest.mark.ray

SERVE_GRPC_CAP = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def http(platform_url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {make_token()}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=300) as session:
        yield session


def test_speech_longer_than_the_cap_comes_back_whole(http: httpx.Client) -> None:
    text = "The quick brown fox jumps over the lazy dog, and then it runs away. " * 26  # ~1,800 characters
    response = http.post("/v1/audio/speech", json={"model": "tts", "input": text, "response_format": "wav"})
    assert response.status_code == 200, response.text
    assert len(response.content) > SERVE_GRPC_CAP
    assert media.wav_info(response.content).seconds > 90


def noise_png(side: int) -> bytes:
    noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))  # noise does not compress
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    return buffer.getvalue()


def test_handle_for_asks_serve_for_a_by_value_call_only_when_small(platform_url: str) -> None:
    handle = serve.get_deployment_handle("tts", app_name="labubu")
    small = handle_for(handle, SpeechRequest(text="Hi."))
    large = handle_for(handle, SpeechRequest(text="word " * 400))
    assert small.handle_options._by_reference is False
    assert large is handle and handle.handle_options._by_reference is True


async def test_a_request_larger_than_the_cap_goes_by_reference_and_is_answered(platform_url: str) -> None:
    # Above the tests' 2 MB body limit, so made straight through the replica's handle, as the
    # ingress and the executor make it.
    request = CaptionRequest(images=[noise_png(1250)])
    assert len(request.images[0]) > SERVE_GRPC_CAP
    handle = serve.get_deployment_handle("pic2text", app_name="labubu")
    result = await handle_for(handle, request).run.remote(request)
    assert isinstance(result.text, str)
    # The cap is real: the same call by value fails.
    with pytest.raises(Exception, match="(?i)message|RESOURCE_EXHAUSTED|larger"):
        await handle.options(_by_reference=False).run.remote(request)
