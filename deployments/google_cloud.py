"""What the Google Cloud backends share: a client on the REST transport, and the SDK's errors
mapped to the platform's (used by `deployments.stt` and `deployments.tts`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from deployments.types import BackendFailure, BackendTimeout, InvalidInput, ModelUnavailable

T = TypeVar("T")

GOOGLE_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def google_client(
    client_class: Callable[..., T],
    service: str,
    *,
    api_endpoint: str | None,
    api_key: str | None,
    credentials_file: str | None,
) -> T:
    """A Google Cloud SDK client on the REST transport, with credentials resolved now.

    Credentials, first match wins: `api_key` (for code that builds a backend: the platform's
    config refuses it, since Serve shows and stores backend options in clear); `credentials_file`
    (a path to any file `google.auth.load_credentials_from_file` reads, e.g. a mounted Secret); none
    at all for a plain `http://` endpoint (a local emulator or test fake); else Application Default
    Credentials (`GOOGLE_APPLICATION_CREDENTIALS` in the replica's environment). Missing or
    unreadable credentials raise `ModelUnavailable` here, at load, not on the first request.

    REST rather than gRPC: it keeps the endpoint an ordinary URL, which the SDK takes with its scheme
    (`http://127.0.0.1:8080` is used as is; a bare host gets `https://`).
    """
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError

    options: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"transport": "rest", "client_options": options}
    if api_endpoint:
        options["api_endpoint"] = api_endpoint
    try:
        if api_key:
            options["api_key"] = api_key
        elif credentials_file:
            kwargs["credentials"], _ = google.auth.load_credentials_from_file(credentials_file, scopes=GOOGLE_SCOPES)
        elif api_endpoint and api_endpoint.startswith("http://"):
            # Unencrypted HTTP is only ever a local emulator: it wants no token, and a real one must
            # not travel in the clear.
            kwargs["credentials"] = AnonymousCredentials()
        return client_class(**kwargs)
    except DefaultCredentialsError as exc:
        raise ModelUnavailable(
            f"{service} has no usable credentials ({exc}); set GOOGLE_APPLICATION_CREDENTIALS in the"
            " environment of every Ray node, or give the backend a `credentials_file`"
        ) from exc


def call_google(service: str, call: Callable[[], T]) -> T:
    """Run one blocking Google Cloud call, raising the platform's errors for the SDK's.

    A 400 is the input's fault (`InvalidInput`, not retried); a deadline is `BackendTimeout`; any
    other API error, a connection failure or a token refresh failure is `BackendFailure`, so that
    the failover chain tries the next backend.
    """
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    try:
        return call()
    except api_exceptions.BadRequest as exc:
        raise InvalidInput(f"{service} refused the input: {exc.message}") from exc
    except (api_exceptions.DeadlineExceeded, requests.Timeout) as exc:
        raise BackendTimeout(f"{service} did not answer in time: {exc}") from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise BackendFailure(f"{service} failed with HTTP {exc.code}: {exc.message}") from exc
    except (requests.RequestException, auth_exceptions.GoogleAuthError) as exc:
        raise BackendFailure(f"{service} cannot be reached: {exc}") from exc
