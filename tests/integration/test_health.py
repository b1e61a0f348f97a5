"""Probes: liveness follows the service's own loops, readiness follows the broker."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from switchboard.brokers.kafka import KafkaBroker
from switchboard.kafka import DELIVERIES
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


# ---- loops that start with the first socket, outside the start-up context -------------


async def _healthz_without(client: httpx.AsyncClient, name: str, timeout: float) -> None:
    """Until /healthz is 200 and no longer lists `name` (a loop stopped on purpose)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get("/healthz")
        if r.status_code == 200 and name not in r.json()["loops"]:
            return
        assert r.status_code == 200, r.text  # a loop stopped on purpose is not dead
        assert time.monotonic() < deadline, f"{name} still watched: {r.text}"
        await asyncio.sleep(0.2)


async def _killed(hub: RunningHub, name: str) -> None:
    live = await hub.client.get("/healthz")
    assert live.status_code == 200 and name in live.json()["loops"], live.text
    supervisor: Supervisor = hub.app.state.supervisor
    supervisor.task(name).cancel()  # the loop is gone, the sockets get nothing any more
    await _until(hub.client, "/healthz", 503, timeout=5)
    assert f"{name}: cancelled" in (await hub.client.get("/healthz")).json()["detail"]


async def test_liveness_watches_the_stream_fanout(broker: object) -> None:
    settings = make_settings(broker)
    hub = await RunningHub(settings).start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(hub_id, auth, channelId="Direct", name="app",
                                            configuration={"integrationType": "Customer"})
        url = f"ws://127.0.0.1:{hub.port}/v1/integrations/{cust['integrationId']}/stream"
        name = f"stream-fanout:{settings.topic(DELIVERIES)}"
        async with connect(url, additional_headers=auth) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            live = await hub.client.get("/healthz")
            assert live.status_code == 200 and name in live.json()["loops"], live.text
        # The last socket gone (the fan-out stays, its partitions paused): still alive.
        await asyncio.sleep(1)
        assert (await hub.client.get("/healthz")).status_code == 200

        async with connect(url, additional_headers=auth) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            await _killed(hub, name)
    finally:
        await hub.stop()


async def _webchat_ready(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "hello"}))
    while (frame := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] != "ready":
        assert frame["type"] in ("session", "ping", "delivery"), frame


async def test_liveness_watches_webchat_tails(broker: object) -> None:
    hub = await RunningHub(make_settings(broker)).start()
    try:
        hub_id, auth = await hub.create_hub()
        webchat = await hub.create_integration(hub_id, auth, channelId="WebChat", name="chat",
                                               configuration={"allowedOrigins": ["localhost"]})
        url = f"ws://127.0.0.1:{hub.port}/webchat/{webchat['integrationId']}/ws"
        name = f"webchat-tail:{webchat['integrationId']}"
        async with connect(url, origin=Origin("http://localhost")) as ws:
            await _webchat_ready(ws)
            live = await hub.client.get("/healthz")
            assert live.status_code == 200 and name in live.json()["loops"], live.text
        # The last visitor gone, the tail stops: on purpose, so not a dead loop.
        await _healthz_without(hub.client, name, timeout=10)

        async with connect(url, origin=Origin("http://localhost")) as ws:
            await _webchat_ready(ws)
            await _killed(hub, name)
    finally:
        await hub.stop()
