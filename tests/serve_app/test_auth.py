"""JWT rules of API.md, checked on the verifier itself (through HTTP on every route: test_attacks.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from serve_app.auth import Role, TokenVerifier, bearer_token, issue_token
from serve_app.errors import ApiError
from tests.helpers import claims, unsigned

SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture()
def verifier() -> TokenVerifier:
    return TokenVerifier(SECRET, "HS256")


def test_valid_token_gives_tenant_and_default_role(verifier: TokenVerifier) -> None:
    principal = verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert (principal.sub, principal.tenant, principal.role) == ("alice", "acme", Role.USER)


def test_admin_role(verifier: TokenVerifier) -> None:
    principal = verifier.verify(jwt.encode(claims(role="admin"), SECRET, algorithm="HS256"))
    assert principal.is_admin


def test_issue_token_round_trip(verifier: TokenVerifier) -> None:
    principal = verifier.verify(issue_token(SECRET, tenant="t1", sub="bob", role="admin", ttl_s=60))
    assert (principal.tenant, principal.sub, principal.is_admin) == ("t1", "bob", True)


def rejected(verify: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        verify()
    assert caught.value.status == 401
    return caught.value


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(jwt.encode(claims(exp=None), SECRET, algorithm="HS256"), id="no-exp"),
        pytest.param(jwt.encode(claims(sub=None), SECRET, algorithm="HS256"), id="no-sub"),
        pytest.param(jwt.encode(claims(tenant=None), SECRET, algorithm="HS256"), id="no-tenant"),
        pytest.param(jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256"), id="expired"),
        pytest.param(jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256"), id="not-yet-valid"),
        pytest.param(jwt.encode(claims(), SECRET, algorithm="HS512"), id="hs512"),
        pytest.param(
            jwt.encode(claims(), "another-secret-of-sufficient-length-0123456789", algorithm="HS256"),
            id="bad-signature",
        ),
        pytest.param(unsigned(claims()), id="alg-none"),
        pytest.param(jwt.encode(claims(role="root"), SECRET, algorithm="HS256"), id="unknown-role"),
        pytest.param(jwt.encode(claims(tenant=""), SECRET, algorithm="HS256"), id="empty-tenant"),
        pytest.param("not.a.token", id="garbage"),
    ],
)
def test_bad_tokens_are_401(verifier: TokenVerifier, token: str) -> None:
    rejected(lambda: verifier.verify(token))


def test_tampered_payload_is_401(verifier: TokenVerifier) -> None:
    header, payload, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(tenant="victim")).encode()).rstrip(b"=").decode()
    rejected(lambda: verifier.verify(f"{header}.{forged}.{signature}"))


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer " + "a" * 10_000])
def test_missing_or_malformed_header_is_401(header: str | None) -> None:
    rejected(lambda: bearer_token(header))


def test_rs256_verifier_refuses_hs256_signed_with_the_public_key() -> None:
    """Algorithm confusion: the public key used as an HMAC secret must not verify."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verifier = TokenVerifier(public_pem, "RS256")
    good = jwt.encode(claims(), private, algorithm="RS256")
    assert verifier.verify(good).tenant == "acme"
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    signature = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    rejected(lambda: verifier.verify(forged))


# ---------------------------------------------------------------- verified tokens remembered


def test_a_remembered_token_still_expires() -> None:
    verifier = TokenVerifier(SECRET, "HS256")
    token = issue_token(SECRET, tenant="t1", ttl_s=1)
    first = verifier.verify(token)
    assert verifier.verify(token) == first  # remembered: the same caller
    time.sleep(1.1)
    with pytest.raises(ApiError) as caught:
        verifier.verify(token)
    assert caught.value.status == 401 and "expired" in caught.value.message


def test_a_refused_token_is_never_remembered(verifier: TokenVerifier) -> None:
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    verifier.verify(good)
    head, payload, signature = good.split(".")
    forged = ".".join([head, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")])
    for _ in range(2):  # the second time too: a failure is checked again, never answered from memory
        with pytest.raises(ApiError) as caught:
            verifier.verify(forged)
        assert caught.value.status == 401


def test_the_remembered_tokens_are_bounded() -> None:
    from serve_app import auth

    verifier = TokenVerifier(SECRET, "HS256")
    tokens = [issue_token(SECRET, tenant=f"t{i}") for i in range(auth.VERIFIED_CACHE_SIZE + 5)]
    principals = [verifier.verify(token) for token in tokens]
    assert len(verifier._verified) == auth.VERIFIED_CACHE_SIZE
    assert verifier.verify(tokens[0]) == principals[0]  # forgotten, then checked again in full
