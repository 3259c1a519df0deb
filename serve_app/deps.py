"""FastAPI dependencies: the replica's `Platform` and the authenticated caller."""

from __future__ import annotations

from fastapi import Depends, Request

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


def body_limit() -> int:
    """The body size limit of this replica (the default until the platform is set up)."""
    return _platform.settings.max_body_bytes if _platform is not None else Settings().max_body_bytes


def authenticated(request: Request, platform: Platform = Depends(get_platform)) -> Principal:
    principal = platform.authenticate(request)
    request.state.principal = principal
    return principal


def admin(principal: Principal = Depends(authenticated)) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this route needs the `admin` role")
    return principal
