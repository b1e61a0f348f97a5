"""The stream gateway under load and abuse, on the tier's broker and a real uvicorn:
sockets share one Kafka consumer, a slow socket is dropped without delaying the others,
sockets are capped per hub, and the token comes in a header or a subprotocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.test_stream import (
    ADMIN,
    TOKEN_A,
    TOKEN_B,
    _bearer,
    _close_code,
    _deliveries,
    _eventually,
    _frame,
    _produce,
    running_gateway,
)


def _ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["webhookId"] for f in frames]


async def test_sockets_share_one_consumer(broker: Any) -> None:
    async with running_gateway(broker, stream_max_connections_per_integration=10) as env:
        history = await _produce(env, "main", 3)
        await _produce(env, "neighbour", 2)  # same partition, never shown
        assert env.gateway.consumer_count() == 0  # nothing is read before a socket asks
        async with contextlib.AsyncExitStack() as stack:
            socks: list[ClientConnection] = []
            for _ in range(8):
                socks.append(await stack.enter_async_context(
                    connect(env.url("main"), additional_headers=_bearer(TOKEN_A))))
            other = await stack.enter_async_context(
                connect(env.url("elsewhere"), additional_headers=_bearer(TOKEN_A)))
            for ws in socks:
                assert (await _frame(ws))["type"] == "ready"
                assert _ids(await _deliveries(ws, 3)) == history  # caught up
            assert (await _frame(other))["type"] == "ready"
            # Live: one record each, fanned out to every socket of its integration.
            sentinel = await _produce(env, "main", 1)
            elsewhere = await _produce(env, "elsewhere", 1)
            for ws in socks:
                assert _ids(await _deliveries(ws, 1)) == sentinel
            assert _ids(await _deliveries(other, 1)) == elsewhere
            # Nine sockets on two partitions: one consumer in this process (the catch-up
            # readers are gone once a socket is live).
            assert env.gateway.consumer_count() == 1
            assert env.gateway.fanout_subscribers() == 9


def _small_receive_buffer() -> socket.socket:
    """A client socket whose kernel buffer fills after a few KiB (so a client that stops
    reading is felt by the server soon, not after the tens of MiB loopback allows)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_slow_socket_is_dropped_without_delaying_others(broker: Any) -> None:
    # Far more than one round of records below: a socket that keeps up is never dropped.
    queued = 256
    async with running_gateway(broker, stream_max_queued=queued) as env:
        host, port = env.base.removeprefix("ws://").split(":")
        slow_sock = _small_receive_buffer()
        slow_sock.connect((host, int(port)))
        async with connect(env.url("main"), additional_headers=_bearer(TOKEN_A),
                           sock=slow_sock, max_queue=1) as slow, \
                connect(env.url("main"), additional_headers=_bearer(TOKEN_A)) as fast:
            assert (await _frame(slow))["type"] == "ready"
            assert (await _frame(fast))["type"] == "ready"
            # The fast client reads everything as it comes; the slow one reads nothing.
            fast_got: list[str] = []

            async def read_fast() -> None:
                while True:
                    fast_got.extend(_ids(await _deliveries(fast, 1)))

            reader = asyncio.create_task(read_fast())
            produced: list[str] = []
            try:
                # Until the slow socket's queue overflows and the gateway lets it go
                # (bounded: 100 rounds of 50 records of 16 KiB is 80 MiB).
                for _ in range(100):
                    produced += await _produce(env, "main", 50, pad=16_000)
                    with contextlib.suppress(TimeoutError):
                        await _eventually(lambda: env.gateway.fanout_subscribers() == 1, 0.5)
                        break
                assert env.gateway.fanout_subscribers() == 1, "the slow socket was not dropped"
                # What the gateway holds for its sockets stays bounded meanwhile.
                assert env.gateway.queued() <= queued
                # A later sentinel reaches the fast socket, after everything, in order:
                # it never waited for the slow one and nothing was skipped.
                sentinel = await _produce(env, "main", 1)
                await _eventually(lambda: fast_got[-1:] == sentinel, 30)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            assert fast_got == produced + sentinel
            # The slow client, reading at last, finds what it was sent, in order, then 1013.
            got: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(60):
                    while True:
                        frame = json.loads(await slow.recv())
                        if frame["type"] == "delivery":
                            got.append(frame)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
            assert 0 < len(got) < len(produced)
            assert _ids(got) == produced[:len(got)]


async def test_socket_cap_per_hub_and_token_forms(broker: Any) -> None:
    async with running_gateway(broker, stream_max_connections_per_hub=2,
                               stream_max_connections_per_integration=5,
                               stream_allow_query_token=False) as env:
        proto = ["switchboard.stream", f"switchboard.bearer.{TOKEN_A}"]
        async with connect(env.url("main"), additional_headers=_bearer(TOKEN_A)) as a, \
                connect(env.url("neighbour"), subprotocols=proto) as b:  # type: ignore[arg-type]
            assert (await _frame(a))["type"] == "ready"
            # A browser's way: the token rides as a subprotocol; the server selects ours,
            # never echoing the token-bearing one.
            assert b.subprotocol == "switchboard.stream"
            assert (await _frame(b))["type"] == "ready"
            # Hub a holds its two sockets: a third is refused, whatever the integration.
            assert await _close_code(env.url("elsewhere"), _bearer(TOKEN_A)) == 4429
            # Another hub has its own cap.
            async with connect(env.url("other_hub"), additional_headers=_bearer(TOKEN_B)) as c:
                assert (await _frame(c))["type"] == "ready"
            assert env.gateway.hub_connection_count("hub-a") == 2
        await _eventually(lambda: env.gateway.hub_connection_count("hub-a") == 0)
        async with connect(env.url("elsewhere"), additional_headers=_bearer(ADMIN)) as d:
            assert (await _frame(d))["type"] == "ready"  # a slot is free again
        # The query form is off here: refused like a missing token. A wrong token in the
        # subprotocol is refused with the code (the handshake still selects ours).
        assert await _close_code(env.url("main", access_token=TOKEN_A)) == 4401
        async with connect(env.url("main"), subprotocols=[  # type: ignore[list-item]
                "switchboard.stream", "switchboard.bearer.sbat_wrong"]) as ws:
            assert ws.subprotocol == "switchboard.stream"
            with pytest.raises(ConnectionClosed) as info:
                await _frame(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_catch_up_slot_wait_has_a_deadline(broker: Any) -> None:
    async with running_gateway(broker, stream_catchup_concurrency=1,
                               stream_catchup_wait_s=0.5) as env:
        await _produce(env, "main", 2)
        slots = env.gateway.catchup_slots()
        # Every catch-up slot is taken (held here): the socket waits, then is told to retry.
        async with slots, connect(env.url("main"), additional_headers=_bearer(TOKEN_A)) as ws:
            assert (await _frame(ws))["type"] == "ready"
            with pytest.raises(ConnectionClosed) as info:
                await _frame(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        # A slot free again: the same client catches up.
        async with connect(env.url("main"), additional_headers=_bearer(TOKEN_A)) as ws:
            assert (await _frame(ws))["type"] == "ready"
            assert len(await _deliveries(ws, 2)) == 2

