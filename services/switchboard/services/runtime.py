"""What every service of one process shares: settings, the producer, the registry view."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.kafka import ensure_topics, make_producer, run_with_broker_retry
from switchboard.keys import Sealer
from switchboard.settings import Settings
from switchboard.store import RegistryStore

log = logging.getLogger(__name__)


class Runtime:
    """Started once per process; services borrow its producer and registry view."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sealer = Sealer.from_b64(settings.secret_key)
        self._producer: AIOKafkaProducer | None = None
        self._registry: RegistryStore | None = None
        self._started = False

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "Runtime.start() first"
        return self._producer

    @property
    def registry(self) -> RegistryStore:
        assert self._registry is not None, "Runtime.start() first"
        return self._registry

    async def start(self) -> None:
        if self._started:
            return
        # aiokafka clients bind to the running loop, so they are made here, not in __init__.
        self._producer = make_producer(self.settings)
        self._registry = RegistryStore(self.settings, self._producer)
        await run_with_broker_retry("topics", lambda: ensure_topics(self.settings))
        await run_with_broker_retry("producer", self.producer.start)
        await self.registry.start()
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            await self.registry.stop()
        finally:
            # Bounded: with the broker gone, flushing what is queued must not hang shutdown.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.produce_timeout_s + 1):
                    await self.producer.stop()

    async def ready(self) -> tuple[bool, str]:
        """Broker reachable and registry view caught up."""
        if not self._started or self._registry is None or not self._registry.caught_up:
            return False, "starting"
        try:
            async with asyncio.timeout(2):
                await self.registry.sync()
        except Exception as exc:
            return False, f"broker unreachable: {exc.__class__.__name__}"
        return True, "ok"


def health_routes(runtime: Runtime) -> list[Route]:
    """`GET /healthz` (the process is alive) and `GET /readyz` (it can do its work)."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, why = await runtime.ready()
        return JSONResponse({"status": "ready" if ok else "not_ready", "detail": why},
                            status_code=200 if ok else 503)

    return [Route("/healthz", healthz), Route("/readyz", readyz)]
