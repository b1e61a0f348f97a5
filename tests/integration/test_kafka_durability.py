"""What only real Kafka gives: state that survives a broker restart, and compaction.

Runs on Apache Kafka (SWITCHBOARD_TEST_BROKER=kafka, as CI does); deselected on Tansu,
which keeps nothing across a restart and never compacts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from switchboard.brokers.kafka import KafkaBroker
from switchboard.kafka import (
    CONVERSATIONS,
    JOBS,
    PARKED,
    REGISTRY,
    STREAM_CURSORS,
    SYNC_PAIRS,
    SYNC_PROFILES,
    SYNC_RUNS,
    SYNC_STATUS,
    SYNCRO_SLOTS,
)
from switchboard.kafka_topics import describe_topics, topic_specs
from tests.conftest import RunningHub, make_settings
from tests.support import Receiver, message, sign_with_cryptography

pytestmark = pytest.mark.kafka_only


async def test_hubs_survive_a_broker_restart(tmp_path: Path) -> None:
    broker = KafkaBroker.start(tmp_path / "kafka")
    receiver = await Receiver().start()
    try:
        settings = make_settings(broker)
        assert settings.idempotent_producer  # the production setting, on real Kafka
        hub = await RunningHub(settings).start()
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="c",
            configuration={"integrationType": "Customer"})
        await hub.create_integration(
            hub_id, auth, channelId="Direct", name="a",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/a"})
        await hub.stop()

        await asyncio.to_thread(broker.restart)

        hub = await RunningHub(settings).start()
        try:
            listed = (await hub.client.get(f"/api/v1/integrations/hubs/{hub_id}",
                                           headers=auth)).json()
            assert sorted(i["name"] for i in listed) == ["a", "c"]
            # Sealed keys and tokens still work after the restart.
            body = message("after restart")
            r = await hub.client.post(
                f"/ingress/{cust['integrationId']}", content=body,
                headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
            assert r.status_code == 202, r.text
            got = await receiver.wait_for("/a", 1, timeout=60)
            assert got[0].json["activity"]["message"]["text"] == "after restart"
        finally:
            await hub.stop()
    finally:
        await receiver.stop()
        broker.stop()


async def test_registry_rebuilds_from_a_compacted_topic(broker: KafkaBroker) -> None:
    settings = make_settings(broker)
    hub = await RunningHub(settings, ["api"]).start()
    try:
        hub_id, auth = await hub.create_hub()
        made = await hub.create_integration(hub_id, auth, channelId="Direct", name="v0",
                                            configuration={"integrationType": "Agent"})
        iid = made["integrationId"]
        for i in range(1, 30):
            r = await hub.client.patch(f"/api/v1/integrations/{iid}", headers=auth,
                                       json={"name": f"v{i}"})
            assert r.status_code == 200
        gone = await hub.create_integration(hub_id, auth, channelId="Direct", name="gone",
                                            configuration={"integrationType": "Bot"})
        assert (await hub.client.delete(f"/api/v1/integrations/{gone['integrationId']}",
                                         headers=auth)).status_code == 204
    finally:
        await hub.stop()

    topic = settings.topic(REGISTRY)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        # What the hub itself created: the tables the README calls compacted are, the
        # logs are not, and each carries the deployment's min.insync.replicas.
        states = {t.name: t for t in await describe_topics(
            admin, [s.name for s in topic_specs(settings)])}
        tables = {settings.topic(t) for t in (REGISTRY, CONVERSATIONS, STREAM_CURSORS, JOBS,
                                              SYNC_PROFILES, SYNC_STATUS, SYNC_PAIRS)}
        runs = settings.topic(SYNC_RUNS)  # a table whose runs expire (30 days by default)
        assert {n for n, t in states.items() if t.configs["cleanup.policy"] == "compact"
                } == tables
        assert states[runs].configs["cleanup.policy"] == "compact,delete"
        assert states[runs].configs["retention.ms"] == str(30 * 24 * 3600 * 1000)
        assert {t.configs["cleanup.policy"] for n, t in states.items()
                if n not in tables and n != runs} == {"delete"}
        assert {(t.replication_factor, t.configs["min.insync.replicas"])
                for t in states.values()} == {(1, "1")}  # auto on a single broker
        # Logs keep SWITCHBOARD_RETENTION_HOURS; parked lanes never expire (a disabled
        # destination holds its deliveries however long it stays disabled).
        parked = settings.topic(PARKED)
        assert states[parked].configs["retention.ms"] == "-1"
        # Syncro's budget: claims of the last minutes, stamped by the broker.
        slots = settings.topic(SYNCRO_SLOTS)
        assert states[slots].configs["retention.ms"] == str(3600 * 1000)
        assert states[slots].configs["message.timestamp.type"] == "LogAppendTime"
        assert {t.configs["retention.ms"] for n, t in states.items()
                if n not in tables and n not in (parked, slots, runs)} == {str(168 * 3600 * 1000)}
        # Only the cleaner's timing is changed here. AlterConfigs replaces a topic's whole
        # set of overrides, so the hub's own cleanup.policy is carried over as it was
        # created: had the hub not made the topic compacted, nothing would be compacted.
        hubs_own = {k: v for k, v in states[topic].configs.items()
                    if k in ("cleanup.policy", "min.insync.replicas")}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {
            **hubs_own, "segment.ms": "100", "min.compaction.lag.ms": "0",
            "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100"})])
    finally:
        await admin.close()

    async def records() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            count = 0
            while (await consumer.position(tp)) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                count += len(batch.get(tp, []))
            return count
        finally:
            await consumer.stop()

    written = await records()
    for n in range(60):  # segments roll by time; keep appending until the cleaner runs
        h = await RunningHub(settings, ["api"]).start()
        await h.create_hub(f"roll-{n}")  # hub names are unique
        await h.stop()
        if await records() < written:
            break
        await asyncio.sleep(0.5)
    assert await records() < written, "the registry topic was never compacted"

    rebuilt = await RunningHub(settings, ["api"]).start()
    try:
        listed = (await rebuilt.client.get(f"/api/v1/integrations/hubs/{hub_id}",
                                           headers=auth)).json()
        assert [(i["integrationId"], i["name"]) for i in listed] == [(iid, "v29")]
        # The rebuilt view still enforces names and versions.
        r = await rebuilt.client.patch(f"/api/v1/integrations/{iid}", headers=auth,
                                       json={"name": "v30"})
        assert r.status_code == 200 and r.json()["name"] == "v30"
    finally:
        await rebuilt.stop()
