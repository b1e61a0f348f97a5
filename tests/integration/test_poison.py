"""A record no stage can handle is kept aside with its reason; the stage moves on."""

from __future__ import annotations

import base64

import msgspec

from switchboard.kafka import ACTIVITIES, ACTIVITIES_DEAD, make_consumer, make_producer
from switchboard.model import DeadActivity
from tests.conftest import RunningHub
from tests.support import Receiver, message, sign_with_cryptography


async def test_undecodable_activity_is_dead_lettered_and_routing_goes_on(
        hub: RunningHub, receiver: Receiver) -> None:
    hub_id, auth = await hub.create_hub()
    customer = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/c"})
    await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})

    # Garbage on `activities`, in the partition the next message goes to (key "x" and
    # the sentinel's conversation may differ: every partition gets one).
    settings = hub.settings
    producer = make_producer(settings)
    await producer.start()
    garbage = b'{"activityId": 7, "not": "an activity"\xff'
    try:
        for p in sorted(await producer.partitions_for(settings.topic(ACTIVITIES))):
            await producer.send_and_wait(settings.topic(ACTIVITIES), garbage, key=b"x",
                                         partition=p)
    finally:
        await producer.stop()

    # A valid message after the garbage still gets through: the router moved on.
    body = message("after the garbage")
    key = customer["configuration"]["privateSigningKey"]
    r = await hub.client.post(f"/ingress/{customer['integrationId']}", content=body,
                              headers=sign_with_cryptography(key, body))
    assert r.status_code == 202, r.text
    got = await receiver.wait_for("/agent", 1)
    assert got[0].json["activity"]["message"]["text"] == "after the garbage"

    # And the garbage was kept, as it was, with its reason: one per partition.
    consumer = make_consumer(settings, settings.topic(ACTIVITIES_DEAD), group_id=None)
    await consumer.start()
    dead: list[DeadActivity] = []
    try:
        partitions = settings.partitions
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                dead += [msgspec.json.decode(r.value or b"", type=DeadActivity)
                         for r in records]
            if len(dead) >= partitions:
                break
    finally:
        await consumer.stop()
    assert len(dead) == partitions
    assert {d.reason for d in dead} == {"undecodable"}
    assert {base64.b64decode(d.value) for d in dead} == {garbage}
    assert sorted(d.partition for d in dead) == list(range(partitions))
