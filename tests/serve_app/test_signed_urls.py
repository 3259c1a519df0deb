"""Signed URLs: valid for their path until they expire, and for nothing else."""

from __future__ import annotations

from urllib.parse import parse_qs

from serve_app.signed_urls import UrlSigner

PATH = "/v1/images/content/acme/img_0123456789abcdef0123456789abcdef"


def signed(signer: UrlSigner, now: float, ttl_s: int = 60) -> tuple[int, str]:
    query = parse_qs(signer.query(PATH, ttl_s, now=now))
    return int(query["expires"][0]), query["signature"][0]


def test_a_url_is_valid_until_it_expires() -> None:
    signer = UrlSigner("secret")
    expires, signature = signed(signer, now=1000.0)
    assert expires == 1060
    assert signer.valid(PATH, expires, signature, now=1000.0)
    assert signer.valid(PATH, expires, signature, now=1060.0)
    assert not signer.valid(PATH, expires, signature, now=1060.5)


def test_a_signature_is_for_its_path_expiry_and_secret_only() -> None:
    signer = UrlSigner("secret")
    expires, signature = signed(signer, now=1000.0)
    assert not signer.valid(PATH.replace("acme", "globex"), expires, signature, now=1000.0)
    assert not signer.valid(PATH, expires + 3600, signature, now=1000.0)  # cannot be extended
    assert not UrlSigner("another secret").valid(PATH, expires, signature, now=1000.0)
