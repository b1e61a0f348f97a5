"""Conversations end after a time without activity; a customer who writes again starts anew."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.kafka import CONVERSATIONS, make_consumer
from tests.conftest import RunningHub, make_settings
from tests.support import Receiver, message, sign_with_cryptography


async def _tombstones(settings: Any, until: int | None = None,
                      timeout: float = 20.0) -> tuple[set[str], int]:
    """Keys deleted on the conversations topic, read from the start up to its current end
    (or until `until` tombstones were seen); and the end offset read to."""
    topic = settings.topic(CONVERSATIONS)
    consumer = make_consumer(settings, topic, group_id=None)
    await consumer.start()
    dead: set[str] = set()
    try:
        [tp] = consumer.assignment() or [None]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        position = 0
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    position = r.offset + 1
                    if r.value is None and r.key is not None:
                        dead.add(r.key.decode())
            if until is not None and len(dead) >= until:
                break
            if until is None and tp is not None:
                end = (await consumer.end_offsets([tp]))[tp]
                if position >= end:
                    break
        return dead, position
    finally:
        await consumer.stop()


async def test_an_inactive_conversation_ends_and_a_new_one_starts(broker: Any) -> None:
    settings = make_settings(broker, conversation_timeout_s=1.5, conversation_sweep_s=0.2)
    hub = await RunningHub(settings).start()
    receiver = await Receiver().start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/c",
                           "start": [{"type": "text", "text": "Welcome!"}]})
        await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
        key = cust["configuration"]["privateSigningKey"]

        async def send(text: str) -> None:
            body = message(text)
            r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                      headers=sign_with_cryptography(key, body))
            assert r.status_code == 202, r.text

        # Active: messages every 0.3 s for longer than the timeout keep it open.
        for i in range(8):
            await send(f"busy {i}")
            await asyncio.sleep(0.3)
        agent = await receiver.wait_for("/agent", 8)
        conversation = agent[0].json["conversationId"]
        dead, _ = await _tombstones(settings)
        assert conversation not in dead  # read to the topic's end: no tombstone so far
        assert len(await receiver.wait_for("/c", 1)) == 1

        # Quiet for longer than the timeout: its owner ends it with a tombstone.
        dead, _ = await _tombstones(settings, until=1)
        assert dead == {conversation}

        # The customer writes again: a new conversation (same id), greeted anew under a
        # new webhook-id.
        await send("back again")
        greetings = await receiver.wait_for("/c", 2)
        assert [g.json["activity"]["message"]["text"] for g in greetings] == ["Welcome!"] * 2
        assert greetings[0].headers["webhook-id"] != greetings[1].headers["webhook-id"]
        again = await receiver.wait_for("/agent", 9)
        assert again[-1].json["conversationId"] == conversation
        assert again[-1].json["activity"]["message"]["text"] == "back again"
    finally:
        await receiver.stop()
        await hub.stop()
