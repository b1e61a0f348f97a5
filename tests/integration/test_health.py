"""Probes: liveness follows the service's own loops, readiness follows the broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from switchboard.brokers.kafka import KafkaBroker
from switchboard.supervision import Supervisor
from tests.conftest import RunningHub, make_settings


async def _until(client: httpx.AsyncClient, path: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(path)
        if r.status_code == status:
            return
        assert time.monotonic() < deadline, f"{path} still {r.status_code}: {r.text}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(("services", "loop"), [
    (["router"], "router"),
    (["deliverer"], "deliverer"),
    (["deliverer"], "deliverer-timers"),
    (["api"], "delivery-log"),
    (["ingress"], "table:{prefix}registry"),
    (["stream"], "table:{prefix}conversations"),
])
async def test_liveness_fails_when_a_loop_dies(broker: object, services: list[str],
                                               loop: str) -> None:
    settings = make_settings(broker)
    hub = await RunningHub(settings, services).start()
    try:
        live = await hub.client.get("/healthz")
        assert live.status_code == 200
        name = loop.format(prefix=settings.topic_prefix)
        assert name in live.json()["loops"]
        assert (await hub.client.get("/readyz")).status_code == 200

        supervisor: Supervisor = hub.app.state.supervisor
        supervisor.task(name).cancel()  # the loop is gone, the process still serves HTTP

        await _until(hub.client, "/healthz", 503, timeout=5)
        dead = (await hub.client.get("/healthz")).json()
        assert dead["status"] == "dead" and f"{name}: cancelled" in dead["detail"]
        ready = await hub.client.get("/readyz")
        assert ready.status_code == 503 and name in ready.json()["detail"]
    finally:
        await hub.stop()


@pytest.mark.kafka_only
async def test_readiness_follows_the_broker_and_liveness_does_not(tmp_path: Path) -> None:
    """A broker outage takes every service out of rotation but restarts none of them."""
    broker = KafkaBroker.start(tmp_path / "kafka")
    hub = await RunningHub(make_settings(broker)).start()
    try:
        await _until(hub.client, "/readyz", 200, timeout=30)
        await asyncio.to_thread(broker.stop)
        await _until(hub.client, "/readyz", 503, timeout=15)
        r = await hub.client.get("/readyz")
        assert r.json()["detail"].startswith("broker unreachable")
        assert "127.0.0.1" not in r.text  # no broker address in an answer
        assert (await hub.client.get("/healthz")).status_code == 200

        await asyncio.to_thread(broker.restart)
        await _until(hub.client, "/readyz", 200, timeout=60)
        assert (await hub.client.get("/healthz")).status_code == 200
    finally:
        await hub.stop()
        broker.stop()
