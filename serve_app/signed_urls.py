"""URLs that let a client fetch what the platform made for it without a token, until they expire,
as S3's presigned URLs do: `images/generations` with `response_format: "url"`.

Where outputs live on S3, the artifact store presigns the URL itself; with the local store the
ingress signs `<path>?expires=<unix time>&signature=<HMAC-SHA256>` with a key of its own, derived
from the API-key secret that every ingress replica shares.
"""

from __future__ import annotations

import hashlib
import hmac
import time

# OpenAI's image URLs are valid for an hour.
URL_TTL_S = 3600


class UrlSigner:
    """Signs and checks (path, expiry) pairs."""

    def __init__(self, secret: str) -> None:
        # Domain-separated: a signature is never an API-key hash, nor the other way round.
        self.key = hmac.new(secret.encode(), b"labubu signed urls", hashlib.sha256).digest()

    def signature(self, path: str, expires: int) -> str:
        return hmac.new(self.key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def query(self, path: str, ttl_s: int = URL_TTL_S, now: float | None = None) -> str:
        """The query string that makes `path` fetchable for `ttl_s` seconds."""
        expires = int(now if now is not None else time.time()) + ttl_s
        return f"expires={expires}&signature={self.signature(path, expires)}"

    def valid(self, path: str, expires: int, signature: str, now: float | None = None) -> bool:
        """Whether the signature is this path's and the URL has not expired."""
        fresh = expires >= (now if now is not None else time.time())
        # compare_digest takes ASCII strings only: anything else is no signature of ours.
        return fresh and signature.isascii() and hmac.compare_digest(signature, self.signature(path, expires))
