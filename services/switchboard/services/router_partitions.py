"""What the router does when its `activities` partitions change owner: on revoke, commit
what is final and forget the partition's dedupe state; on assignment, re-read the recent
activity ids before the committed offset, so a provider retry that arrives after a
rebalance or restart is still recognised (`PartitionOwnership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from switchboard.kafka import make_consumer
from switchboard.services.router_batches import Seen

if TYPE_CHECKING:
    from switchboard.services.router import Router

log = logging.getLogger(__name__)

SEED_RECORDS = 10_000  # how far back a new owner looks for already-routed activity ids
SEED_TIMEOUT_S = 10.0


class _ActivityId(msgspec.Struct, rename="camel"):
    activity_id: str


_id_decoder = msgspec.json.Decoder(_ActivityId)


class PartitionOwnership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Per-partition dedupe state follows partition ownership.

    On assignment the new owner re-reads the tail before the committed offset, so a
    provider retry that arrives after a rebalance or restart is still recognised.
    """

    def __init__(self, router: Router, consumer: AIOKafkaConsumer) -> None:
        self._router = router
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await self._router._commit_final(self._consumer, set(revoked))
        except Exception as exc:
            log.warning("router: commit on revoke failed: %r", exc)
        for tp in revoked:
            self._router._seen.pop(tp.partition, None)
            self._router._final.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._router._table_stale = True
        if not assigned:
            return
        self._router._seeded.clear()
        try:
            async with asyncio.timeout(SEED_TIMEOUT_S):
                await self._seed(self._consumer, list(assigned))
        except Exception as exc:  # best effort: dedupe is an optimisation over at-least-once
            log.warning("router: could not re-read recent activities (%r)", exc)
        finally:
            self._router._seeded.set()

    async def _seed(self, group: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        reader = make_consumer(self._router.runtime.settings, group_id=None)
        try:  # the seed's time limit may cancel the start itself: close it either way
            await reader.start()
            for tp in assigned:
                committed = await group.committed(tp)
                if not committed:
                    continue
                start = max((await reader.beginning_offsets([tp]))[tp], committed - SEED_RECORDS)
                reader.assign([tp])
                reader.seek(tp, start)
                seen = self._router._seen.setdefault(tp.partition, Seen())
                while (await reader.position(tp)) < committed:
                    batch = await reader.getmany(tp, timeout_ms=500)
                    for rec in batch.get(tp, []):
                        if rec.offset >= committed:
                            break
                        if not self._router.admit(rec):
                            continue
                        with contextlib.suppress(msgspec.DecodeError):
                            seen.add(_id_decoder.decode(rec.value or b"").activity_id)
        finally:
            await reader.stop()
