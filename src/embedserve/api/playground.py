"""The playground: a browser page at ``/playground`` that drives this server's own API.

Plain HTML, CSS and JavaScript shipped inside the package (``api/static/playground``), served
from memory with a Content-Security-Policy that allows nothing but this origin, so the page
can never fetch an asset from outside. Only the files named in ``ASSETS`` are served. The app
leaves this router out when ``Settings.playground`` is false, so the paths are then a 404.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.responses import Response

PATH = "/playground"

# name → media type; the page links its assets relative to itself ("playground/app.js").
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["playground"], include_in_schema=False)


@cache
def _read(name: str) -> bytes:
    return files("embedserve.api").joinpath("static", "playground", name).read_bytes()


def _asset(name: str) -> Response:
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)


@router.get(PATH)
async def page() -> Response:
    """The page itself."""
    return _asset("index.html")


@router.get(PATH + "/{name}")
async def asset(name: str) -> Response:
    """The page's script and style sheet; any other name is a 404."""
    if name not in ASSETS or name == "index.html":
        raise HTTPException(404)  # rendered like any unknown route
    return _asset(name)
