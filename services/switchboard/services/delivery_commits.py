"""The deliverer's offset commits (`DeliveryCommits`): what is final, committed every
`COMMIT_INTERVAL_S` off the consume loop, and on revoke and stop.

An offset is committed only when every record below it in its partition is final
(invariant 3; `switchboard.offsets` tracks that), for partition p of both `deliveries` and
`deliveries.parked`, and only once the attempt records of what it covers are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from switchboard.offsets import PartitionOffsets
from switchboard.services.delivery_records import DelivererStats, DeliveryRecords
from switchboard.services.lanes import Partition
from switchboard.supervision import supervised

__all__ = ["COMMIT_INTERVAL_S", "COMMIT_TIMEOUT_S", "DeliveryCommits"]

# Logged as the deliverer, like its other parts: one logger to follow a deliverer by.
log = logging.getLogger("switchboard.services.deliverer")

COMMIT_INTERVAL_S = 0.2
COMMIT_TIMEOUT_S = 10.0


class DeliveryCommits:
    """Commits one deliverer's final offsets, one commit at a time.

    `consumer` gives the group consumer, or None while there is none (then nothing is
    committed); `owned` the partitions owned right now, for the periodic commit.
    """

    def __init__(self, consumer: Callable[[], AIOKafkaConsumer | None],
                 owned: Callable[[], Iterable[Partition]],
                 records: DeliveryRecords, stats: DelivererStats) -> None:
        self._consumer = consumer
        self._owned = owned
        self._records = records
        self._stats = stats
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = supervised(self._commit_periodically(), name="deliverer-commits")

    async def stop(self) -> None:
        """Stop the periodic commits (the final commit is the caller's, once lanes end)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _commit_periodically(self) -> None:
        """Commit what is final every COMMIT_INTERVAL_S, off the consume loop: a commit is
        a broker round trip (plus the attempt log's flush) that new records must not wait for."""
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            try:
                await self.commit(list(self._owned()))
            except Exception:
                log.exception("deliverer: periodic commit failed; will retry")

    async def commit(self, parts: Iterable[Partition]) -> None:
        # One at a time: two commits in flight could land out of order and move a
        # committed offset back.
        async with self._lock:
            await self._commit_now(parts)

    async def _commit_now(self, parts: Iterable[Partition]) -> None:
        consumer = self._consumer()
        if consumer is None:
            return
        # What is committed must have its attempt records written too.
        await self._records.flush_log()
        offsets: dict[TopicPartition, int] = {}
        owners: list[tuple[PartitionOffsets, int]] = []
        for part in parts:
            for tp, tracker in ((part.tp, part.offsets), (part.parked_tp, part.parked.offsets)):
                offset = tracker.committable()
                if offset is not None:
                    offsets[tp] = offset
                    owners.append((tracker, offset))
        if not offsets:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us. aiokafka rejoins; our revoke handler drops
            # the partitions and their new owner (maybe us) redoes them from the last commit.
            log.info("deliverer: commit failed after a rebalance; redoing from last commit")
            return
        except (KafkaError, TimeoutError) as exc:
            log.warning("deliverer: commit failed (%r); will retry", exc)
            return
        for tracker, offset in owners:
            tracker.mark_committed(offset)
        self._stats.commits += 1
