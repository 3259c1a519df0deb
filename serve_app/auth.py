"""JWT authentication: who is calling, and for which tenant.

The tenant is always the token's `tenant` claim; nothing in a request body can change it.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import jwt

from serve_app.errors import ApiError

# Tenant ids name keys and paths in the stores: a safe alphabet, checked once at the door.
TENANT_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


def valid_tenant(tenant: str) -> bool:
    """A tenant id that is safe as a key and as a path segment (`.` and `..` are not)."""
    return bool(TENANT_ID.match(tenant)) and tenant not in (".", "..")


class Role(str, Enum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    sub: str
    tenant: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


# A token is a few hundred bytes; anything far larger is refused before it is parsed.
MAX_TOKEN_BYTES = 8192


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header: a JWT or an API key."""
    if not authorization:
        raise unauthorized("an `Authorization: Bearer <token>` header is required")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("the Authorization header must be `Bearer <token>`")
    if len(token) > MAX_TOKEN_BYTES:
        raise unauthorized("the token is too large")
    return token


# Verified tokens remembered per verifier: a client sends the same token with each call.
VERIFIED_CACHE_SIZE = 4096


class TokenVerifier:
    """Checks JWTs against the one configured algorithm and key.

    A token that passed is remembered until it expires (the newest `VERIFIED_CACHE_SIZE`), so a
    client's next calls with it skip the signature's check and the claims' parsing: the same
    string, checked against the same key, gives the same caller until its `exp`. A token that
    failed is never remembered.
    """

    def __init__(self, key: str, algorithm: str, clock: Callable[[], float] = time.time) -> None:
        if algorithm not in ("HS256", "RS256"):
            raise ValueError(f"unsupported JWT algorithm {algorithm}")
        self.key = key
        self.algorithm = algorithm
        self.clock = clock
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def verify(self, token: str) -> Principal:
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires_at = remembered
            if self.clock() < expires_at:
                return principal
            del self._verified[token]
        principal, expires_at = self._check(token)
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _check(self, token: str) -> tuple[Principal, float]:
        """The caller of a token, checked in full, and when the token expires."""
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],  # exactly one: no `none`, no algorithm confusion
                options={"require": ["exp", "sub", "tenant"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("the token is not valid yet") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"the token is invalid: {exc}") from None
        sub, tenant, role = claims.get("sub"), claims.get("tenant"), claims.get("role", "user")
        if not isinstance(sub, str) or not sub or not isinstance(tenant, str) or not tenant:
            raise unauthorized("the token's `sub` and `tenant` claims must be non-empty strings")
        if not valid_tenant(tenant):
            raise unauthorized("the token's `tenant` must be 1 to 128 letters, digits, `_`, `.`, `@` or `-`")
        if role not in ("user", "admin"):
            raise unauthorized("the token's `role` must be `user` or `admin`")
        return Principal(sub=sub, tenant=tenant, role=Role(role)), float(claims["exp"])


def issue_token(secret: str, tenant: str, sub: str = "user", role: str = "user", ttl_s: int = 3600) -> str:
    """An HS256 token for `tenant`, as `labubu token` prints it."""
    now = int(time.time())
    claims = {"sub": sub, "tenant": tenant, "role": role, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")
