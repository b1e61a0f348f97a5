"""Read a hub's topics raw, from offset 0 to their current end (for tests that inspect
what reached Kafka)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from switchboard.settings import Settings

Record = tuple[str, bytes | None, bytes | None]  # topic, key, value


async def partitions(settings: Settings, topics: list[str]) -> dict[str, list[int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        return {d["topic"]: sorted(p["partition"] for p in d["partitions"])
                for d in described if d.get("partitions")}
    finally:
        await admin.close()


async def read_topics(settings: Settings, names: list[str] | None = None,
                      timeout: float = 60.0) -> list[Record]:
    """Every record of the named topics (unprefixed names; None: every topic with the
    hub's prefix), in partition order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        if names is None:
            topics = sorted(t for t in await consumer.topics()
                            if t.startswith(settings.topic_prefix))
        else:
            topics = [settings.topic(n) for n in names]
        parts = await partitions(settings, topics)
        tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Record] = []
        async with asyncio.timeout(timeout):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                out.extend((r.topic, r.key, r.value) for rs in batch.values() for r in rs)
        return out
    finally:
        await consumer.stop()
