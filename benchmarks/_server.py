"""One HTTP server process for the benchmarks: the Switchboard hub, or a bare echo baseline.

Both are served identically (uvicorn, workers=1, on uvloop, http "auto" = httptools,
no access log) so the only difference measured is the application.

    python benchmarks/_server.py echo --port P
    python benchmarks/_server.py hub --port P --services api,ingress   # settings from env
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def echo_app() -> Starlette:
    async def echo(request: Request) -> Response:
        return JSONResponse(await request.json())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/echo", echo, methods=["POST"]),
                             Route("/healthz", healthz), Route("/readyz", healthz)])


def hub_app(services: list[str]) -> Starlette:
    from switchboard.services.app import build_app
    from switchboard.settings import Settings

    return build_app(Settings.from_env(), services)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=["echo", "hub"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--services", default="api,ingress")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


    async def serve() -> None:
        # Built inside the running loop: the hub's Kafka producer needs one at construction.
        app = echo_app() if args.app == "echo" else hub_app(args.services.split(","))
        config = uvicorn.Config(app, host="127.0.0.1", port=args.port, workers=1,
                                http="auto", log_level="warning", access_log=False,
                                lifespan="on")
        await uvicorn.Server(config).serve()

    # The loop uvicorn's "auto" would pick: uvloop when installed.
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
