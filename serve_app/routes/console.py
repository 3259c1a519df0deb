"""The web console: static files from `serve_app/console/`, served without auth (API.md, "Auth").

The page is plain HTML, CSS and ES modules; it talks to the API with the token the user pastes.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from serve_app.errors import ERROR_RESPONSES, not_found

router = APIRouter(tags=["console"], responses={404: ERROR_RESPONSES[404]})

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# One plain file name with a known suffix: no separators, no `..`, nothing hidden. Checked
# before the file system is touched, so no request can name a file outside the console folder.
FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
# The browser revalidates every time (FileResponse sends an ETag), so a new release shows at once.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def console_file(name: str) -> FileResponse:
    """The console's file `name`, with its content type; a 404 error body for any other name."""
    suffix = Path(name).suffix.lower()
    path = CONSOLE_DIR / name
    if not FILE_NAME.match(name) or ".." in name or suffix not in CONTENT_TYPES or not path.is_file():
        raise not_found(f"console file {name!r}")
    return FileResponse(path, media_type=CONTENT_TYPES[suffix], headers=HEADERS)


@router.get("/console", summary="The web console (no auth: the page asks for a token)")
async def console_page() -> FileResponse:
    return console_file("index.html")


@router.get("/console/{name}", summary="A static file of the web console")
async def console_static(name: str) -> FileResponse:
    return console_file(name)
