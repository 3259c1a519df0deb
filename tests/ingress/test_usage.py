"""What the usage statistics count of calls that the door refuses (issue 14, "Bugs found from
outside"): a 4xx is not charged, and a 429 is counted as a refusal, never as a request served."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.helpers import wait_until
from tests.serve_app.contract import assert_error


def usage_of(http: TestClient, headers: dict[str, str], service: str) -> dict[str, Any] | None:
    items = http.get("/v1/usage", params={"days": 1}, headers=headers).json()["items"]
    found = [item for item in items if item["service"] == service]
    return found[0] if found else None


def settled_usage(http: TestClient, headers: dict[str, str], service: str) -> dict[str, Any]:
    """The service's usage once the ledger has written it (it writes beside the calls, not in their way)."""
    wait_until(lambda: usage_of(http, headers, service) is not None, 10, f"the usage of {service}")
    usage = usage_of(http, headers, service)
    assert usage is not None
    return usage


def test_a_served_call_is_charged(http: TestClient, user: dict[str, str]) -> None:
    assert http.post("/v1/audio/speech", json={"model": "tts", "input": "Hello."}, headers=user).status_code == 200
    usage = settled_usage(http, user, "tts")
    assert (usage["requests"], usage["errors"], usage["cost"]) == (1, 0, len("Hello."))


def test_a_429_is_a_refusal_and_not_charged(
    http: TestClient, admin: dict[str, str], user: dict[str, str], tenant: str
) -> None:
    assert http.put(f"/v1/admin/tenants/{tenant}", json={"max_concurrency": 0}, headers=admin).status_code == 200
    assert_error(http.post("/v1/audio/speech", json={"model": "tts", "input": "Hello."}, headers=user), 429)
    usage = settled_usage(http, user, "tts")
    assert (usage["requests"], usage["refused"], usage["cost"]) == (0, 1, 0)


def test_a_4xx_from_the_backend_is_not_charged(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "llm", "messages": [{"role": "user", "content": "word " * 5000}], "max_tokens": 200}
    assert_error(http.post("/v1/chat/completions", json=body, headers=user), 422, "input_too_large")
    usage = settled_usage(http, user, "llm")
    assert (usage["requests"], usage["refused"], usage["cost"]) == (0, 1, 0)


def test_embeddings_of_the_wrong_dimension_are_not_charged(http: TestClient, user: dict[str, str]) -> None:
    body = {"model": "embed", "input": "hello", "dimensions": 10}
    assert_error(http.post("/v1/embeddings", json=body, headers=user), 422, "validation_error")
    usage = settled_usage(http, user, "embed")
    assert (usage["requests"], usage["cost"]) == (0, 0)
