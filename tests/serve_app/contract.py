"""What every HTTP test checks of an error answer: its status and API.md's JSON error body."""

from __future__ import annotations

import json
from typing import Any

import httpx


def error_body(status: int, headers: Any, content: bytes) -> dict[str, Any]:
    """The `error` object of an answer, checked to be exactly API.md's shape; raises if it is not."""
    assert headers.get("content-type", "").startswith("application/json"), (status, content[:300])
    body = json.loads(content)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"].replace("_", "").isalpha() and error["code"].islower()
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list) and all(isinstance(d, dict) for d in error["details"])
    assert "Traceback" not in content.decode(errors="replace"), content[:300]
    return error  # type: ignore[no-any-return]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = error_body(response.status_code, response.headers, response.content)
    if code:
        assert error["code"] == code, error
    return error
