"""A customer's web site on loopback that embeds the hub's web chat widget.

The WebChat "provider" is the browser itself; what a test needs besides the hub is a page
on another origin that embeds the script as a site would (``<script src=…/widget.js>``).
"""

from __future__ import annotations

import html

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from switchboard.brokers import free_port
from tests.support import LoopbackServer


class EmbeddingSite:
    """Serves ``/`` (a page with the widget in its default bubble mode) on 127.0.0.1."""

    def __init__(self, widget_url: str, visitor_name: str | None = None) -> None:
        self.port = free_port()
        self.widget_url = widget_url
        self.visitor_name = visitor_name
        self.requests: list[str] = []
        app = Starlette(routes=[Route("/", self._page), Route("/favicon.ico", self._nothing)])
        self._http = LoopbackServer(app, self.port)

    def url(self, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}/"

    async def _page(self, request: Request) -> Response:
        self.requests.append(request.headers.get("host", ""))
        name = (f' data-visitor-name="{html.escape(self.visitor_name)}"'
                if self.visitor_name else "")
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'><title>Shop</title></head>"
            "<body><h1>Acme shop</h1><p>Products…</p>"
            f'<script src="{html.escape(self.widget_url)}" async{name}></script>'
            "</body></html>")

    async def _nothing(self, request: Request) -> Response:
        return Response(status_code=204)

    async def start(self) -> EmbeddingSite:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()
