"""A paced consumer that went idle reads what a rebalance hands it at once, not at its
next slow look (`switchboard.pacing`): the partitions a dead process held may carry
records another process wrote, and no wake-up crosses processes.

On Apache Kafka consumers are never paused, so there the test checks only the outcome.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from switchboard.broker_config import kafka_kwargs
from switchboard.kafka import start_group_consumer
from switchboard.kafka_topics import ensure_topics
from switchboard.pacing import IDLE_AFTER_S, Pacer
from tests.conftest import make_settings

SLOW_LOOK_MS = 60_000  # far beyond the test's bound: a pacer that waits for it fails


class Member(ConsumerRebalanceListener):  # type: ignore[misc]
    """A group member with nothing to do on a rebalance."""

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


def member(consumer: AIOKafkaConsumer) -> Member:
    return Member()


async def test_a_rebalance_wakes_an_idle_pacer(broker: Any) -> None:
    settings = make_settings(broker, partitions=2, fetch_idle_poll_ms=SLOW_LOOK_MS,
                             session_timeout_ms=6000, heartbeat_interval_ms=500)
    await ensure_topics(settings)
    topic = settings.topic("activities")
    paced = await start_group_consumer(settings, topic, "pacing", member)
    other = await start_group_consumer(settings, topic, "pacing", member)
    # Another process's producer, as far as the pacer can tell: it wakes nobody here.
    producer = AIOKafkaProducer(**kafka_kwargs(settings))
    await producer.start()
    pacer = Pacer(paced, settings, [topic])
    try:
        async with asyncio.timeout(60):
            # Both members hold a partition; the paced one polls until it counts as idle.
            while len(paced.assignment()) != 1 or len(other.assignment()) != 1:
                await pacer.getmany(timeout_ms=100)
                await other.getmany(timeout_ms=100)
            (theirs,) = other.assignment()
            if broker.kind == "tansu":
                # Polled until it pauses: its next getmany sleeps until woken.
                while not pacer.idle:
                    assert not any((await pacer.getmany(timeout_ms=100)).values())
            else:
                idle_since = time.monotonic()
                while time.monotonic() - idle_since < IDLE_AFTER_S + 0.5:
                    assert not any((await pacer.getmany(timeout_ms=100)).values())
                assert not pacer.idle

            # Written to the other member's partition (no wake-up),
            # then that member leaves: its partition moves to the idle one.
            await producer.send_and_wait(topic, b"handed over", partition=theirs.partition)
            await other.stop()
            left_at = time.monotonic()
            got: list[bytes] = []
            while not got:
                batch = await pacer.getmany(timeout_ms=100)
                got = [r.value for recs in batch.values() for r in recs if r.value]
            took = time.monotonic() - left_at
    finally:
        pacer.close()
        await producer.stop()
        await paced.stop()
        await other.stop()

    assert got == [b"handed over"]
    # The rebalance itself takes a moment; the slow look would take a minute.
    assert took < 15, f"read {took:.1f} s after the rebalance"
