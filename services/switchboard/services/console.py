"""`/console`: the web console's static files, served by the API with a strict
Content-Security-Policy.

The console is a static client of `/api/v1` (plain ES modules and hand-written CSS in
`console_assets/`, no build step, nothing fetched from elsewhere): it holds the token in
the tab's sessionStorage and sends it in the Authorization header, so it has no powers of
its own and no cookie a cross-site page could ride on. Every text from the API is inserted
with textContent (activity texts are attacker-controlled); the policy below refuses inline
scripts and styles, eval, and every origin but the hub's own, so a mistake there would
still not run a script.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.errors import NotFound

_ASSETS = importlib.resources.files(__package__) / "console_assets"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# A Host header as browsers send it: a name or an IP literal, and a port. Anything else
# (it is the client's to choose) leaves the websocket to 'self' alone.
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def _load() -> dict[str, tuple[bytes, str, str]]:
    """name → (body, content type, ETag), read once: the files ship with the package."""
    files: dict[str, tuple[bytes, str, str]] = {}
    for entry in _ASSETS.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[entry.name] = (body, _TYPES[suffix], etag)
    return files


def content_security_policy(host: str | None) -> str:
    """The console's policy; the websocket of the live feed is on the page's own host."""
    connect = "'self'"
    if host and _HOST.match(host):
        # CSP Level 3 lets 'self' cover ws(s) of the same host, but not every browser does.
        connect += f" ws://{host} wss://{host}"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src {connect}; font-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def _headers(request: Request, content_type: str) -> dict[str, str]:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = content_security_policy(request.headers.get("host"))
    return headers


def console_routes() -> list[Route]:
    """`/console` (the page) and `/console/{name}` (its modules and stylesheet)."""
    files = _load()

    def serve(request: Request, name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise NotFound("not_found", "no such console file")
        body, content_type, etag = found
        headers = _headers(request, content_type)
        # Revalidated on every load (a 304 costs a round trip, not the body), so a hub
        # upgraded in place never runs an old module against a new page.
        headers["Cache-Control"] = "no-cache"
        headers["ETag"] = etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=content_type, headers=headers)

    async def page(request: Request) -> Response:
        return serve(request, "index.html")

    async def asset(request: Request) -> Response:
        return serve(request, request.path_params["name"])

    return [
        Route("/console", page, methods=["GET", "HEAD"]),
        Route("/console/", page, methods=["GET", "HEAD"]),
        Route("/console/{name}", asset, methods=["GET", "HEAD"]),
    ]
