"""API keys: credentials an admin issues for a tenant and role, for clients that cannot mint JWTs.

A key is `lbk_<id>_<secret>`. The store keeps, by id, the key's tenant, role, name and expiry and
the HMAC-SHA256 of its secret keyed with the server's `api_key_secret` (never the secret), so a
copy of the store does not let anyone use a key. The secret is 256 random bits: nobody can guess
it, so a fast keyed hash is enough (slow hashes protect guessable passwords).

Every request reads its key's record from the store (one small document; no cache), so a
revocation or an expiry takes effect at once on every ingress replica.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timezone
from typing import Any

from dag.records import now_rfc3339, rfc3339
from serve_app.auth import Principal, Role, unauthorized
from state.store import StateStore

PREFIX = "lbk_"
NAMESPACE = "api_keys"
KEY_ID = re.compile(r"^[0-9a-f]{16}$")


class ApiKeys:
    """Issues, lists, revokes and verifies API keys, stored in the state store."""

    def __init__(self, store: StateStore, secret: str) -> None:
        self.store = store
        self.secret = secret.encode()

    def _digest(self, secret: str) -> str:
        return hmac.new(self.secret, secret.encode(), hashlib.sha256).hexdigest()

    def create(self, tenant: str, role: Role, name: str, expires_at: datetime | None) -> tuple[dict[str, Any], str]:
        """The new key's record (as `list` shows it) and the key itself, which only this answer has."""
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        record = {
            "id": key_id,
            "tenant": tenant,
            "role": role.value,
            "name": name,
            "created_at": now_rfc3339(),
            "expires_at": rfc3339(expires_at) if expires_at else None,
        }
        self.store.put(NAMESPACE, key_id, {**record, "hash": self._digest(secret)})
        return record, f"{PREFIX}{key_id}_{secret}"

    def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The keys (of one tenant, if given), newest first, without their hashes."""
        records = [
            {k: v for k, v in doc.items() if k != "hash"}
            for _, doc in self.store.items(NAMESPACE)
            if tenant is None or doc["tenant"] == tenant
        ]
        return sorted(records, key=lambda record: (record["created_at"], record["id"]), reverse=True)

    def revoke(self, key_id: str) -> bool:
        """Delete the key; False if there is no such key."""
        return bool(KEY_ID.match(key_id)) and self.store.delete(NAMESPACE, key_id)

    def verify(self, token: str) -> Principal:
        """The caller a key stands for; 401 for a malformed, unknown, revoked or expired key."""
        key_id, _, secret = token.removeprefix(PREFIX).partition("_")
        doc = self.store.get(NAMESPACE, key_id) if KEY_ID.match(key_id) else None
        if doc is None or not hmac.compare_digest(doc["hash"], self._digest(secret)):
            raise unauthorized("the API key is invalid or has been revoked")
        if doc["expires_at"] and datetime.fromisoformat(doc["expires_at"]) <= datetime.now(timezone.utc):
            raise unauthorized("the API key has expired")
        return Principal(sub=f"key:{key_id}", tenant=doc["tenant"], role=Role(doc["role"]))
