"""Assemble one process from any subset of the services, sharing one Runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from switchboard import supervision
from switchboard.services.channels import load_plugins
from switchboard.services.health import health_routes
from switchboard.services.http import EXCEPTION_HANDLERS, body_deadline
from switchboard.services.runtime import Runtime
from switchboard.settings import Settings

if TYPE_CHECKING:
    from switchboard.services.ingress import FastPath

log = logging.getLogger(__name__)
SERVICES = ("api", "ingress", "router", "deliverer", "stream", "sync")


class Worker(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class HubApp(Starlette):
    """The Starlette app, with the ingress's hottest request answered before routing."""

    fast_path: FastPath | None = None
    # SWITCHBOARD_BODY_READ_TIMEOUT_S: every request body, API and ingress alike.
    body_timeout_s: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.body_timeout_s is not None:
            receive = body_deadline(receive, self.body_timeout_s)
        fast = self.fast_path
        if fast is not None:
            integration_id = fast.integration_id(scope)
            if integration_id is not None:
                scope["app"] = self
                await fast.handle(scope, receive, send, integration_id)
                return
        await super().__call__(scope, receive, send)


def build_app(settings: Settings, services: Iterable[str] = SERVICES) -> Starlette:
    """A Starlette app running `services` on one Runtime (health endpoints always)."""
    names = list(services)
    unknown = set(names) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown services: {sorted(unknown)}")
    runtime = Runtime(settings)
    # The loops the services start (consume loops, table readers) are watched by the
    # liveness probe: see switchboard.supervision.
    supervisor = supervision.Supervisor()
    routes: list[BaseRoute] = list(health_routes(runtime, supervisor))
    workers: list[Worker] = []
    plugins = load_plugins(runtime)
    # Imported per service so a process loads only what it runs.
    if "api" in names:
        from switchboard.services.api import Api
        from switchboard.services.console import console_routes
        from switchboard.services.docs import docs_routes

        api = Api(runtime, plugins)
        routes += api.routes()
        workers.append(api)  # the delivery log and redelivery jobs
        routes += docs_routes()
        routes += console_routes()  # static files: a client of the API above
    fast_path = None
    if "ingress" in names:
        from switchboard.services.ingress import Ingress

        ingress = Ingress(runtime, plugins)
        routes += ingress.routes()
        fast_path = ingress.fast_path()
        workers.extend(plugins.values())  # channel gateways (web chat) run with the ingress
    if "stream" in names:
        from switchboard.services.stream import StreamGateway

        gateway = StreamGateway(runtime)
        workers.append(gateway)
        routes += gateway.routes()
    if "router" in names:
        from switchboard.services.router import Router

        workers.append(Router(runtime))
    if "deliverer" in names:
        from switchboard.services.deliverer import Deliverer

        senders = {c: p.sender for c, p in plugins.items() if p.sender is not None}
        workers.append(Deliverer(runtime, senders=senders))
    if "sync" in names:
        from switchboard.services.graph_notifications import GraphSubscriber
        from switchboard.services.sync_worker import SyncWorker

        sync_worker = SyncWorker(runtime)  # two-way record sync runs (sync.jobs)
        # Graph subscriptions of the profiles that worker owns, kept alive beside it.
        workers += [sync_worker, GraphSubscriber(sync_worker)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watching = supervision.current.set(supervisor)
        try:
            await runtime.start()
            started: list[Worker] = []
            try:
                # At once: each consumer group's join takes seconds (the broker waits for
                # more members), and the workers do not depend on each other.
                outcomes = await asyncio.gather(*(w.start() for w in workers),
                                                return_exceptions=True)
                started = [w for w, o in zip(workers, outcomes, strict=True)
                           if not isinstance(o, BaseException)]
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
                yield
            finally:
                for w in reversed(started):
                    await w.stop()
                await runtime.stop()
        finally:
            supervision.current.reset(watching)

    handlers: Any = EXCEPTION_HANDLERS
    app = HubApp(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.fast_path = fast_path
    app.body_timeout_s = settings.body_read_timeout_s
    app.state.runtime = runtime
    app.state.supervisor = supervisor
    app.state.workers = workers
    return app
