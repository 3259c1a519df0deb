"""Ephemeral client secrets (`ek_...`): short-lived keys a browser opens a realtime session with.

A secret is stored only as its hash (namespace `realtime_secrets`), with the tenant, the caller
and the session config it was issued for, and an expiry after which it is refused (and removed).
Blocking: call these in a thread.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from serve_app.auth import Principal, Role, unauthorized
from state.store import StateStore

PREFIX = "ek_"
NAMESPACE = "realtime_secrets"
DEFAULT_TTL_S = 600
MAX_TTL_S = 7200


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(store: StateStore, principal: Principal, ttl_s: int, session: dict[str, Any]) -> tuple[str, int]:
    """A new secret for `principal`'s tenant, and when it expires (Unix seconds)."""
    secret = PREFIX + secrets.token_urlsafe(32)
    expires_at = int(time.time()) + ttl_s
    record = {
        "tenant": principal.tenant,
        "sub": principal.sub,
        "role": principal.role.value,
        "expires_at": expires_at,
        "session": session,
    }
    store.put(NAMESPACE, _key(secret), record)
    return secret, expires_at


def verify(store: StateStore, secret: str) -> tuple[Principal, dict[str, Any]]:
    """The caller a secret was issued to and its session config; 401 if unknown or expired."""
    record = store.get(NAMESPACE, _key(secret))
    if record is None:
        raise unauthorized("the client secret is invalid")
    if record["expires_at"] <= time.time():
        store.delete(NAMESPACE, _key(secret))
        raise unauthorized("the client secret has expired")
    principal = Principal(sub=record["sub"], tenant=record["tenant"], role=Role(record["role"]))
    return principal, dict(record.get("session") or {})
