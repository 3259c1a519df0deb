"""The routes without auth (API.md, "Auth" and "Health"), and what the app answers for a path or a
method it does not have."""

from __future__ import annotations

from fastapi.testclient import TestClient

from modalities import SERVICES
from tests.serve_app.contract import assert_error


def test_healthz_needs_no_token(http: TestClient) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_says_every_service_is_ready(http: TestClient) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200, response.text
    services = response.json()["services"]
    assert set(services) == set(SERVICES)
    assert all(state["ready"] for state in services.values()), services


def test_openapi_needs_no_token_and_declares_the_bearer_scheme(http: TestClient) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    operations = [op for methods in spec["paths"].values() for op in methods.values()]
    secured = [op for op in operations if op.get("security")]
    assert len(secured) >= 25
    # Every secured operation documents its 401 with API.md's error body.
    for operation in secured:
        assert "401" in operation["responses"], operation["operationId"]
    assert "ErrorBody" in spec["components"]["schemas"]
    for path in ("/healthz", "/readyz"):
        assert not any(op.get("security") for op in spec["paths"][path].values())


def test_docs_need_no_token(http: TestClient) -> None:
    response = http.get("/docs")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]


def test_unknown_route_is_a_json_404(http: TestClient) -> None:
    assert_error(http.get("/v1/nothing-here"), 404, "not_found")
    assert_error(http.get("/v1/workflows/"), 404, "not_found")  # no redirect for a trailing slash


def test_wrong_method_is_a_json_405(http: TestClient) -> None:
    assert_error(http.delete("/healthz"), 405, "method_not_allowed")
