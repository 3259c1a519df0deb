"""Files of the OpenAI surface: a batch's input, its output and error files, a tenant's own data.

The bytes are an artifact under `+files/t-<tenant>/<id>` (tenant ids never contain `+`, so no key
can meet a tenant's workflow artifacts); the `file` object is a document of the state store
(namespace `files`, key `<tenant>/<id>`), listed newest first through an index per tenant (and
per tenant and purpose). Every function here blocks: call it in a thread.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from serve_app.errors import not_found
from serve_app.platform import Platform
from state.store import IndexEntry

FILES = "files"
FILE_ID = re.compile(r"^file-[A-Za-z0-9_-]{1,80}$")
JSONL = "application/jsonl"


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def tenant_segment(tenant: str) -> str:
    """The tenant as one path segment of an artifact key: quoted, and prefixed so that no tenant
    id (`.`, `..`) makes a segment the artifact store refuses."""
    return f"t-{quote(tenant, safe='')}"


def artifact_key(tenant: str, file_id: str) -> str:
    return f"+files/{tenant_segment(tenant)}/{file_id}"


def list_index(tenant: str, purpose: str | None = None) -> str:
    name = f"files/{quote(tenant, safe='')}"
    return f"{name}/purpose/{purpose}" if purpose else name


def _entry(tenant: str, file: dict[str, Any]) -> IndexEntry:
    key = f"{tenant}/{file['id']}"
    created = float(file["created_at_s"])
    return IndexEntry(key, {list_index(tenant): created, list_index(tenant, file["purpose"]): created})


def save(
    platform: Platform, tenant: str, data: bytes, filename: str, purpose: str, file_id: str | None = None
) -> dict[str, Any]:
    """Store a file (replacing one of the same id) and answer its `file` object."""
    file_id = file_id or new_file_id()
    now = time.time()
    content_type = JSONL if purpose.startswith("batch") else "application/octet-stream"
    platform.workflows.artifacts.put(artifact_key(tenant, file_id), data, content_type)
    file = {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(now),
        "created_at_s": now,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
    platform.store.put(FILES, f"{tenant}/{file_id}", file, _entry(tenant, file))
    return public(file)


def public(file: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in file.items() if k != "created_at_s"}


def get(platform: Platform, tenant: str, file_id: str) -> dict[str, Any]:
    """The tenant's file document; 404 for one that is missing or another tenant's."""
    file = platform.store.get(FILES, f"{tenant}/{file_id}") if FILE_ID.match(file_id) else None
    if file is None:
        raise not_found(f"file {file_id!r}")
    return file


def content(platform: Platform, tenant: str, file_id: str) -> tuple[bytes, str]:
    get(platform, tenant, file_id)
    return platform.workflows.artifacts.get(artifact_key(tenant, file_id))


def delete(platform: Platform, tenant: str, file_id: str) -> None:
    file = get(platform, tenant, file_id)
    platform.workflows.artifacts.delete(artifact_key(tenant, file_id))
    platform.store.delete(FILES, f"{tenant}/{file_id}", _entry(tenant, file))


def page(
    platform: Platform, tenant: str, purpose: str | None, limit: int, after: str | None, newest_first: bool
) -> dict[str, Any]:
    """One page of the tenant's files after the file `after` (OpenAI's cursor)."""
    return cursor_page(platform, FILES, list_index(tenant, purpose), tenant, limit, after, newest_first, public)


def cursor_page(
    platform: Platform,
    namespace: str,
    index: str,
    tenant: str,
    limit: int,
    after: str | None,
    newest_first: bool,
    public: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """OpenAI's cursor list of a tenant's documents (keys `<tenant>/<id>`) after the id `after`: a
    page of keys of the index, then only those documents."""
    offset = 0
    if after is not None:
        keys = platform.store.index_page(index, 0, platform.store.index_count(index), newest_first)
        key = f"{tenant}/{after}"
        offset = keys.index(key) + 1 if key in keys else len(keys)
    keys = platform.store.index_page(index, offset, limit + 1, newest_first)
    found = [public(d) for d in platform.store.get_many(namespace, keys[:limit]) if d is not None]
    return {
        "object": "list",
        "data": found,
        "first_id": found[0]["id"] if found else None,
        "last_id": found[-1]["id"] if found else None,
        "has_more": len(keys) > limit,
    }
