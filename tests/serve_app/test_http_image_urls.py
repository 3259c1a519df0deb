"""`images/generations` with `response_format: "url"`: a URL the client fetches without a token,
refused once tampered with or expired, and never another tenant's image."""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import make_token

pytestmark = pytest.mark.ray


def test_an_image_url_is_fetched_without_a_token_and_refused_when_tampered(platform_url: str) -> None:
    client = openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant="urls"), max_retries=0)
    answer = client.images.generate(prompt="a red fox", size="64x64", n=2, response_format="url")
    urls = [image.url for image in answer.data]
    assert len(urls) == 2 and all(urls) and urls[0] != urls[1]
    for url in urls:
        assert url is not None and url.startswith(platform_url)
        fetched = httpx.get(url, timeout=30)  # no Authorization header: the signature is the key
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)

    url = urls[0]
    assert url is not None
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    base = f"{parts.scheme}://{parts.netloc}"
    later = int(query["expires"][0]) + 3600  # extending the expiry breaks the signature
    extended = httpx.get(f"{base}{parts.path}?expires={later}&signature={query['signature'][0]}", timeout=30)
    assert extended.status_code == 403 and extended.json()["error"]["code"] == "invalid_signature"
    other_tenant = parts.path.replace("/urls/", "/someone-else/")
    stolen = httpx.get(f"{base}{other_tenant}?{parts.query}", timeout=30)
    assert stolen.status_code == 403
    unsigned = httpx.get(f"{base}{parts.path}", timeout=30)
    assert unsigned.status_code == 422  # the signature is required
