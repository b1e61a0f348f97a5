"""Shared fixtures: a real broker (Tansu or Apache Kafka) and a real hub on loopback."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from switchboard.brokers import free_port, start_broker
from switchboard.keys import generate_secret_key_b64
from switchboard.settings import Settings

BROKER_KIND = os.environ.get("SWITCHBOARD_TEST_BROKER", "tansu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that need compaction or persistence run on Apache Kafka; on Tansu they are
    # deselected (not skipped): CI runs the suite on both brokers.
    if BROKER_KIND == "kafka":
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("kafka_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One broker for the whole session; tests isolate themselves with topic prefixes."""
    data = tmp_path_factory.mktemp("broker")
    b = start_broker("kafka" if BROKER_KIND == "kafka" else "tansu", data)
    try:
        yield b
    finally:
        b.stop()


def make_settings(broker: Any, **overrides: Any) -> Settings:
    """Settings for a test hub: its own topics, fast timeouts, fresh secrets."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": broker.bootstrap,
        "broker_kind": broker.kind,
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
        "partitions": 4,
        "secret_key": generate_secret_key_b64(),
        "admin_token": "test-admin-" + uuid.uuid4().hex,
        # Four attempts, quick: at once, then 50, 100 and 200 ms after each failure.
        "retry_schedule": "0,0.05,0.1,0.2",
        "retry_jitter": 0.0,
        # Receivers and fakes listen on 127.0.0.1.
        "allow_private_destinations": True,
        "delivery_timeout_s": 3.0,
        "session_timeout_ms": 6000,
        "produce_timeout_s": 5.0,
        # `serve` processes stopped by the tests: a short readiness drain after SIGTERM.
        "shutdown_drain_s": 0.5,
        # Fresh topics on Kafka: start without waiting for their leaders (about 1.2 s a
        # hub; the clients retry meanwhile). `switchboard dev` in the tests does wait.
        "topic_ready_wait_s": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


class RunningHub:
    """A hub app served by uvicorn on 127.0.0.1, plus an HTTP client pointed at it."""

    def __init__(self, settings: Settings, services: list[str] | None = None,
                 log_level: str = "warning") -> None:
        from switchboard.services.app import SERVICES, build_app
        from switchboard.services.serving import uvicorn_config

        self.settings = settings
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.app = build_app(settings, services or list(SERVICES))
        # The production configuration (websocket bounds, log scrubbing), as `serve` runs it.
        self._server = uvicorn.Server(uvicorn_config(
            self.app, settings, host="127.0.0.1", port=self.port, log_level=log_level,
            lifespan="on"))
        self._task: asyncio.Task[None] | None = None
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=30)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.admin_token}"}

    async def start(self) -> RunningHub:
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(600):
            if self._server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.05)
        raise TimeoutError("hub did not start")

    async def stop(self) -> None:
        await self.client.aclose()
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    async def create_hub(self, name: str = "acme") -> tuple[str, dict[str, str]]:
        # Hub names are unique: a hub shared by a module's tests (or restarted on the same
        # topics) gets "acme", then "acme-2"…; the first use of a name keeps it, so a test
        # that looks a hub up by name still can.
        wanted = name
        for uses in range(2, 100):
            r = await self.client.post("/api/v1/hubs", json={"name": name},
                                       headers=self.admin)
            if r.status_code != 409 or "hub_name_taken" not in r.text:
                break
            name = f"{wanted}-{uses}"
        assert r.status_code == 201, r.text
        body = r.json()
        return body["hubId"], {"Authorization": f"Bearer {body['accessToken']}"}

    async def create_integration(self, hub_id: str, auth: dict[str, str], **body: Any
                                 ) -> dict[str, Any]:
        r = await self.client.post(f"/api/v1/integrations/hubs/{hub_id}", json=body,
                                   headers=auth)
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result


@pytest.fixture
async def hub(broker: Any) -> AsyncIterator[RunningHub]:
    """A fresh hub (all services, own topics) for one test."""
    h = await RunningHub(make_settings(broker)).start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    """A recording webhook receiver on loopback (tests.support.Receiver)."""
    from tests.support import Receiver

    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
