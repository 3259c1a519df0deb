"""Schemathesis against the running platform's own /openapi.json: every operation, with a valid
token and with broken ones, a bounded and deterministic number of examples of each.

Every answer must be a status that /openapi.json documents for its operation, every error API.md's
JSON body, none a 500, none slower than the timeout. The valid token is an admin of a tenant whose
quota is zero (no concurrency, no queue): each request is checked as far as the door goes, and none
runs a model, so the fuzz takes seconds and leaves the models to the other tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import make_token
from tests.helpers import unsigned
from tests.serve_app.contract import error_body

pytestmark = pytest.mark.ray

# Per operation and generation mode (valid and invalid data); 32 operations. Raise it locally to
# fuzz harder: `FUZZ_EXAMPLES` is the only knob.
FUZZ_EXAMPLES = 12
REQUEST_TIMEOUT_S = 30  # no request may hang: a slower answer fails the test

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": FUZZ_EXAMPLES, "deterministic": True, "mode": "all"},
        # The coverage phase alone sends hundreds of boundary cases per operation: too slow here.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def expired() -> str:
    return make_token(tenant="fuzz-expired", ttl_s=-60)


BROKEN_AUTHORIZATION = [
    "",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer not.a.token",
    f"Bearer {unsigned({'sub': 'x', 'tenant': 'acme', 'exp': 4_000_000_000})}",
    f"Bearer {expired()}",
    "Bearer " + "A" * 9000,
]


@pytest.fixture(scope="module")
def fuzz_admin(platform_url: str) -> str:
    """An admin token of a fresh tenant that may run nothing: every model call is a 429."""
    tenant = f"fuzz-{uuid.uuid4().hex[:8]}"
    token = make_token(tenant=tenant, role="admin")
    quota = {"max_concurrency": 0, "rate_per_s": 0, "burst": 0, "max_queued": 0}
    response = httpx.put(
        f"{platform_url}/v1/admin/tenants/{tenant}",
        json=quota,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return token


@pytest.fixture(scope="module")
def operations(platform_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{platform_url}/openapi.json", config=CONFIG, timeout=30)
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 30, [op.label for op in found]  # the whole API, not a fragment of it
    return found


def fuzz(operations: list[Any], send: Callable[[Any, str], Any]) -> int:
    """Each operation with valid and with invalid data, `FUZZ_EXAMPLES` cases each; the count sent.

    schemathesis's strategies driven by hypothesis directly: its pytest plugin does not run on
    pytest 9.2 (it sets a node attribute pytest removed)."""
    sent = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode), token=st.sampled_from(BROKEN_AUTHORIZATION))
            def run(case: Any, token: str) -> None:
                nonlocal sent
                sent += 1
                send(case, token)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without input has no invalid data
    return sent


def check_answer(case: Any, response: Any) -> None:
    """A documented status; an error is API.md's body; nothing is a 500 or shows a stack trace."""
    where = f"{case.method} {case.formatted_path} {case.query} {str(case.body)[:200]!r}"
    documented = {int(status) for status in case.operation.definition.raw["responses"] if status.isdigit()}
    assert response.status_code != 500, (where, response.content[:500])
    assert response.status_code in documented, (where, response.status_code, response.content[:300])
    if response.status_code >= 400:
        headers = {name: values[0] for name, values in response.headers.items()}
        error_body(response.status_code, headers, response.content)
    assert b"Traceback" not in response.content, where


def test_fuzz_with_a_valid_token(operations: list[Any], platform_url: str, fuzz_admin: str) -> None:
    def send(case: Any, _: str) -> None:
        headers = {"Authorization": f"Bearer {fuzz_admin}"}
        check_answer(case, case.call(base_url=platform_url, headers=headers, timeout=REQUEST_TIMEOUT_S))

    sent = fuzz(operations, send)
    print(f"fuzzed {sent} requests with a valid token")
    assert sent >= len(operations) * 2


def test_fuzz_with_broken_tokens(operations: list[Any], platform_url: str) -> None:
    def send(case: Any, authorization: str) -> None:
        headers = {"Authorization": authorization}
        response = case.call(base_url=platform_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        check_answer(case, response)
        # A body too large (413), or one FastAPI cannot parse (400, 422), is refused before the token
        # is looked at; anything else on a route that needs a token is a 401.
        if case.operation.definition.raw.get("security") and response.status_code not in (400, 413, 422):
            assert response.status_code == 401, (case.method, case.formatted_path, response.content[:300])

    sent = fuzz(operations, send)
    print(f"fuzzed {sent} requests with broken tokens")
    assert sent >= len(operations) * 2
