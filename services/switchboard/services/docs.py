"""`/openapi.json` and `/docs`: the API document and Swagger UI, served by the hub itself.

Swagger UI's files come from the `swagger-ui-py` package (a runtime dependency); only its
static files are read, found without importing the package's Python. The page is ours
(`docs_assets/`), under the same kind of strict Content-Security-Policy as the console:
scripts, styles and requests from the hub only, no inline script, nothing from a CDN.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.errors import NotFound
from switchboard.services.http import JSON
from switchboard.services.openapi import openapi_spec

_OWN = importlib.resources.files(__package__) / "docs_assets"
# Of Swagger UI's files, the two the page loads (the bundle carries its own presets).
_SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
# Swagger UI sets styles from script (allowed) and shows its icons as data: images.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def swagger_ui_dir() -> Path:
    """Where the installed swagger-ui-py keeps Swagger UI's static files."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a runtime dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


class _Files:
    """The page's files, read on first use (most processes never serve /docs)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str, str]] | None = None

    def get(self, name: str) -> tuple[bytes, str, str] | None:
        if self._files is None:
            files = {n: (_OWN / n).read_bytes() for n in ("index.html", "docs.js")}
            static = swagger_ui_dir()
            files |= {n: (static / n).read_bytes() for n in _SWAGGER_FILES}
            self._files = {
                n: (body, _TYPES["." + n.rsplit(".", 1)[1]],
                    '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
                for n, body in files.items()}
        return self._files.get(name)


def _headers(content_type: str, etag: str) -> dict[str, str]:
    headers = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               "X-Frame-Options": "DENY", "Cross-Origin-Resource-Policy": "same-origin",
               "Cache-Control": "no-cache", "ETag": etag}
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
    return headers


def docs_routes() -> list[Route]:
    """`/openapi.json`, `/docs` and `/docs/{name}`."""
    spec = openapi_spec()
    swagger_ui_dir()  # a missing runtime dependency fails the build, not the first visit
    files = _Files()

    def serve(request: Request, name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise NotFound("not_found", "no such docs file")
        body, content_type, etag = found
        headers = _headers(content_type, etag)
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=content_type, headers=headers)

    async def openapi(request: Request) -> Response:
        return JSON(spec)

    async def page(request: Request) -> Response:
        return serve(request, "index.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "index.html":
            raise NotFound("not_found", "no such docs file")
        return serve(request, name)

    return [Route("/openapi.json", openapi, methods=["GET", "HEAD"]),
            Route("/docs", page, methods=["GET", "HEAD"]),
            Route("/docs/{name}", asset, methods=["GET", "HEAD"])]
