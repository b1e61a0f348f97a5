"""The stream gateway against a real broker, a real uvicorn server and a real websocket client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import uvicorn
from aiokafka.partitioner import DefaultPartitioner
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from switchboard.brokers import free_port
from switchboard.channels import DirectConfig
from switchboard.kafka import DELIVERIES
from switchboard.keys import generate_secret_key_b64, hash_token
from switchboard.model import (
    Activity,
    ChannelId,
    Delivery,
    IntegrationType,
    Sender,
    StatusId,
    TextMessage,
)
from switchboard.registry import HubRecord, IntegrationRecord
from switchboard.services.runtime import Runtime
from switchboard.services.serving import uvicorn_config
from switchboard.services.stream import StreamGateway
from switchboard.settings import Settings

ADMIN = "admin-" + uuid.uuid4().hex
TOKEN_A = "sbat_a" + uuid.uuid4().hex
TOKEN_B = "sbat_b" + uuid.uuid4().hex
MAX_CONNS = 2


@dataclass
class Env:
    runtime: Runtime
    gateway: StreamGateway
    base: str  # ws://127.0.0.1:port
    partition: int  # of the main integration
    ids: dict[str, str]

    def url(self, name: str, **query: str) -> str:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{self.base}/v1/integrations/{self.ids[name]}/stream" + (f"?{qs}" if qs else "")


def _now() -> int:
    return int(time.time() * 1000)


def _integration(iid: str, hub_id: str, name: str, webhook_url: str | None = None
                 ) -> IntegrationRecord:
    now = _now()
    return IntegrationRecord(
        integration_id=iid, hub_id=hub_id, channel_id=ChannelId.DIRECT,
        integration_type=IntegrationType.AGENT, name=name, status_id=StatusId.ACTIVE,
        configuration=DirectConfig(integration_type=IntegrationType.AGENT,
                                   webhook_url=webhook_url),
        version=1, created_at=now, updated_at=now,
    )


@pytest.fixture(scope="module")
async def env(broker: Any) -> AsyncIterator[Env]:
    async with running_gateway(broker, stream_max_connections_per_integration=MAX_CONNS) as e:
        yield e


@contextlib.asynccontextmanager
async def running_gateway(broker: Any, log_level: str = "warning", **overrides: Any
                          ) -> AsyncIterator[Env]:
    """A stream gateway alone on uvicorn (as `serve` configures it), on the tier's broker
    (Tansu, or Apache Kafka with SWITCHBOARD_TEST_BROKER=kafka), with hubs a and b."""
    settings = Settings(**{
        "kafka_bootstrap_servers": broker.bootstrap, "broker_kind": broker.kind,
        "secret_key": generate_secret_key_b64(),
        "topic_prefix": f"st-{uuid.uuid4().hex[:8]}-", "admin_token": ADMIN,
        "partitions": 4, **overrides})
    runtime = Runtime(settings)
    await runtime.start()
    gateway = StreamGateway(runtime, heartbeat_s=1.0)
    await gateway.start()
    port = free_port()
    server = uvicorn.Server(uvicorn_config(
        Starlette(routes=gateway.routes()), settings, host="127.0.0.1", port=port,
        log_level=log_level, lifespan="off",
    ))
    serving = asyncio.create_task(server.serve())
    try:
        await _eventually(lambda: server.started)
        parts = sorted(await runtime.producer.partitions_for(settings.topic(DELIVERIES)))
        main = "int-" + uuid.uuid4().hex
        partition = DefaultPartitioner()(main.encode(), parts, parts)
        # A neighbour in the same partition: its records are interleaved with main's.
        while True:
            neighbour = "int-" + uuid.uuid4().hex
            if DefaultPartitioner()(neighbour.encode(), parts, parts) == partition:
                break
        # And one in another partition.
        while True:
            elsewhere = "int-" + uuid.uuid4().hex
            if DefaultPartitioner()(elsewhere.encode(), parts, parts) != partition:
                break
        ids = {"main": main, "neighbour": neighbour, "elsewhere": elsewhere,
               "hooked": "int-" + uuid.uuid4().hex, "other_hub": "int-" + uuid.uuid4().hex}
        for hub_id, token in (("hub-a", TOKEN_A), ("hub-b", TOKEN_B)):
            hub = HubRecord(hub_id=hub_id, name=hub_id, token_hash=hash_token(token),
                            created_at=_now())
            assert (await runtime.registry.put(hub)).accepted
        for rec in (
            _integration(main, "hub-a", "main"),
            _integration(neighbour, "hub-a", "neighbour"),
            _integration(elsewhere, "hub-a", "elsewhere"),
            _integration(ids["hooked"], "hub-a", "hooked", "https://example.invalid/hook"),
            _integration(ids["other_hub"], "hub-b", "other"),
        ):
            assert (await runtime.registry.put(rec)).accepted
        yield Env(runtime, gateway, f"ws://127.0.0.1:{port}", partition, ids)
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await gateway.stop()
        await runtime.stop()


async def _produce(env: Env, name: str, n: int, pad: int = 0) -> list[str]:
    """Produce `n` deliveries to integration `name` (text: the webhook id, plus `pad`
    characters), in order; returns their webhook ids."""
    iid = env.ids[name]
    ids = []
    sent = []
    for _ in range(n):
        did = "dlv-" + uuid.uuid4().hex
        conv = "conv-1"
        activity = Activity(
            activity_id="act-" + did, hub_id="hub-a", integration_id="src", channel_id="Direct",
            type="message:customer", conversation_id=conv, sender=Sender(id="cust"),
            timestamp=_now(), message=TextMessage(text=did + "x" * pad),
        )
        delivery = Delivery(delivery_id=did, hub_id="hub-a", destination_id=iid,
                            conversation_id=conv, activity=activity, created_at=_now())
        # One producer keeps a partition's records in the order they were sent.
        sent.append(await env.runtime.producer.send(
            env.runtime.settings.topic(DELIVERIES), msgspec.json.encode(delivery),
            key=iid.encode()))
        ids.append(did)
    await asyncio.gather(*sent)
    return ids


async def _frame(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    """The next non-ping frame."""
    async with asyncio.timeout(timeout):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] != "ping":
                return frame


async def _deliveries(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    frames = [await _frame(ws) for _ in range(n)]
    assert all(f["type"] == "delivery" for f in frames), frames
    return frames


async def _nothing_more(env: Env, ws: ClientConnection) -> str:
    """Nothing else is on its way to `ws`: a record produced now, after everything before
    it in the partition, is the very next frame. Returns its webhook id."""
    [sentinel] = await _produce(env, "main", 1)
    frame = await _frame(ws)
    assert frame["type"] == "delivery" and frame["webhookId"] == sentinel, frame
    return sentinel


async def _close_code(url: str, headers: dict[str, str] | None = None) -> int:
    async with connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(5):
                await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def _eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


async def _all_closed(env: Env) -> None:
    # The server persists the last ack as it tears the socket down; wait for that.
    await _eventually(lambda: env.gateway.connection_count(env.ids["main"]) == 0)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_refusals(env: Env) -> None:
    assert await _close_code(env.url("main")) == 4401
    assert await _close_code(env.url("main"), _bearer("sbat_wrong")) == 4401
    assert await _close_code(env.url("main", access_token="sbat_wrong")) == 4401
    # Another hub's integration looks like a missing one.
    assert await _close_code(env.url("other_hub"), _bearer(TOKEN_A)) == 4404
    assert await _close_code(env.url("main"), _bearer(TOKEN_B)) == 4404
    env.ids["ghost"] = "int-" + uuid.uuid4().hex
    assert await _close_code(env.url("ghost"), _bearer(TOKEN_A)) == 4404
    assert await _close_code(env.url("hooked"), _bearer(TOKEN_A)) == 4409
    assert await _close_code(env.url("main", cursor="x:1"), _bearer(TOKEN_A)) == 4400
    wrong_partition = f"{env.partition + 1}:0"
    assert await _close_code(env.url("main", cursor=wrong_partition), _bearer(TOKEN_A)) == 4400


async def test_connection_cap_and_admin(env: Env) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(MAX_CONNS):
            ws = await stack.enter_async_context(connect(env.url("main"),
                                                         additional_headers=_bearer(ADMIN)))
            assert (await _frame(ws))["type"] == "ready"
        assert await _close_code(env.url("main"), _bearer(TOKEN_A)) == 4429
    await _all_closed(env)


async def test_heartbeat(env: Env) -> None:
    async with connect(env.url("main", access_token=TOKEN_A)) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        async with asyncio.timeout(5):
            assert json.loads(await ws.recv()) == {"type": "ping"}
    await _all_closed(env)


async def test_order_ack_and_resume(env: Env) -> None:
    p = env.partition
    first = await _produce(env, "main", 2)
    await _produce(env, "neighbour", 1)  # same partition, between main's records
    first += await _produce(env, "main", 2)

    async with connect(env.url("main"), additional_headers=_bearer(TOKEN_A)) as ws:
        ready = await _frame(ws)
        assert ready == {"type": "ready", "cursor": f"{p}:-1"}  # never acked: from the start
        got = await _deliveries(ws, 4)
        assert [f["webhookId"] for f in got] == first
        for f in got:
            assert f["payload"]["integrationId"] == env.ids["main"]
            assert f["payload"]["hubId"] == "hub-a"
            assert f["payload"]["conversationId"] == "conv-1"
            assert f["payload"]["activity"]["message"]["text"] == f["webhookId"]
        offsets = [int(f["cursor"].split(":")[1]) for f in got]
        assert offsets == sorted(offsets) and all(f["cursor"].startswith(f"{p}:") for f in got)
        s1 = await _nothing_more(env, ws)  # the neighbour's record is never shown
        # An ack is persisted while the socket is open...
        await ws.send(json.dumps({"type": "ack", "cursor": got[0]["cursor"]}))
        await _eventually(lambda: env.gateway.acked_cursor(env.ids["main"]) == got[0]["cursor"])
        # ...and the latest one on close, even if it came within the coalescing window.
        # Ack all but the last: it must come again on reconnect.
        for f in got[1:3]:
            await ws.send(json.dumps({"type": "ack", "cursor": f["cursor"]}))
        acked = got[2]["cursor"]
    await _all_closed(env)
    assert env.gateway.acked_cursor(env.ids["main"]) == acked

    more = await _produce(env, "main", 2)
    await _produce(env, "neighbour", 1)

    # Without a cursor: strictly after the last ack, the un-acked one first, in order.
    async with connect(env.url("main", access_token=TOKEN_A)) as ws:
        assert await _frame(ws) == {"type": "ready", "cursor": acked}
        got2 = await _deliveries(ws, 4)
        assert [f["webhookId"] for f in got2] == [first[3], s1, *more]
        s2 = await _nothing_more(env, ws)

    # An explicit older cursor wins over the stored one: everything after it, in order.
    async with connect(env.url("main", cursor=got[0]["cursor"]),
                       additional_headers=_bearer(TOKEN_A)) as ws:
        assert await _frame(ws) == {"type": "ready", "cursor": got[0]["cursor"]}
        got3 = await _deliveries(ws, 7)
        assert [f["webhookId"] for f in got3] == [*first[1:], s1, *more, s2]
        await _nothing_more(env, ws)
    await _all_closed(env)

    # The ack went through Kafka: a fresh gateway (another process) knows it at start.
    other = StreamGateway(env.runtime)
    await other.start()
    try:
        assert other.acked_cursor(env.ids["main"]) == acked
    finally:
        await other.stop()


async def test_ack_of_undelivered_cursor_is_refused(env: Env) -> None:
    async with connect(env.url("main", access_token=TOKEN_A)) as ws:
        ready = await _frame(ws)
        ahead = f"{env.partition}:{int(ready['cursor'].split(':')[1]) + 1000}"
        await _deliveries(ws, 6)  # what is still un-acked from the test before
        await ws.send(json.dumps({"type": "ack", "cursor": ahead}))
        with pytest.raises(ConnectionClosed) as info:
            await _frame(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4400
    await _all_closed(env)
    # Connecting with a cursor beyond the stream resumes from its end instead (a broker
    # may briefly report an end below what it served): nothing is skipped.
    async with connect(env.url("main", cursor=ahead), additional_headers=_bearer(TOKEN_A)) \
            as ws:
        again = await _frame(ws)
        assert again["type"] == "ready"
        assert int(again["cursor"].split(":")[1]) < int(ahead.split(":")[1])
