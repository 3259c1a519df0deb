"""FastAPI dependencies: the replica's `Platform` and the authenticated caller."""

from __future__ import annotations

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve_app.auth import Principal
from serve_app.errors import ApiError
from serve_app.platform import Platform
from serve_app.settings import Settings

# Serve gives each ingress replica its own copy of the FastAPI app, so the routes find the
# replica's platform here rather than on `app.state`.
_platform: Platform | None = None


def set_platform(platform: Platform) -> None:
    global _platform
    _platform = platform


async def get_platform() -> Platform:
    if _platform is None:
        raise ApiError(503, "starting", "the platform is starting", retry_after=2)
    _platform.start_background_tasks()
    return _platform


def current_settings() -> Settings:
    """This replica's settings (the defaults until the platform is set up)."""
    return _platform.settings if _platform is not None else Settings()


# Declares the bearer scheme on every authenticated route of /openapi.json (for clients and the
# fuzz test); the header itself is checked by the platform's verifier, whose 401s say what is wrong.
bearer_scheme = HTTPBearer(
    auto_error=False, description="A JWT, or an API key `lbk_...`, of the caller's tenant (API.md, Auth)"
)


async def authenticated(
    request: Request,
    platform: Platform = Depends(get_platform),
    _: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> Principal:
    # async: FastAPI would run a plain function in its thread pool, a thread hop on every request.
    principal = await platform.authenticate(request)
    request.state.principal = principal
    return principal


async def admin(principal: Principal = Depends(authenticated)) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this route needs the `admin` role")
    return principal
