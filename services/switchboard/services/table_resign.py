"""Sign the last-write-wins tables again (`conversations`, `jobs`, `stream-cursors`).

Part of `switchboard reseal` (the registry is written again there, record by record,
through its view). Every record carries a MAC under the key that was first when it was
written (`switchboard.record_mac`); after a key rotation, or after upgrading from a
release without MACs (with ``SWITCHBOARD_RECORD_MAC=accept-unsigned``), the latest record
of every key is written again, value unchanged, signed under the current key. What the
readers refuse (no MAC in ``enforce`` mode, a MAC of an unknown key, a forged one) is
never signed: it is counted, and if it was written after a record the readers hold, that
record is written again, so compaction cannot leave the refused one as the last word.

A table written meanwhile by the hub itself: a record written between the scan and our
copy of the same key would be overwritten by the older copy, so it is written once more
after ours (and counted as changed meanwhile: run `reseal` again).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeAlias

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import TopicPartition

from switchboard.kafka import (
    CONVERSATIONS,
    JOBS,
    STREAM_CURSORS,
    SYNC_PAIRS,
    SYNC_RUNS,
    SYNC_STATUS,
    make_consumer,
)
from switchboard.progress import Progress
from switchboard.record_mac import RecordGuard, guard_for, mac_header
from switchboard.sealer import UnsealError
from switchboard.settings import Settings

__all__ = ["TABLES", "TableReport", "Transform", "resign_table", "resign_tables"]

TABLES = (CONVERSATIONS, JOBS, STREAM_CURSORS, SYNC_STATUS, SYNC_PAIRS, SYNC_RUNS)
_IDLE_MS = 500

Record: TypeAlias = ConsumerRecord[bytes, bytes]
# A table whose values hold sealed secrets (sync.profiles): (key, value) -> the value
# resealed under the current key, or None when it already is; UnsealError when a value
# opens under no configured key.
Transform: TypeAlias = Callable[[bytes, bytes], bytes | None]


class TableReport(msgspec.Struct, frozen=True):
    table: str
    # Latest records of their key signed again under the current key (or that would be).
    resigned: int
    # Latest records already signed under the current key.
    current: int
    # Records the readers refuse (not written by this hub, or unsigned in enforce mode).
    refused: int
    # Keys written by the hub between the scan and our copy: run again.
    conflicts: int
    # With a transform: values resealed (or that would be), and keys whose value opens
    # under no configured key (left as they are).
    rewritten: int = 0
    unreadable: list[str] = msgspec.field(default_factory=list)


async def _records(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int
                   ) -> AsyncIterator[Record]:
    """Every record from `start` until the partition has nothing more to give (Tansu's
    end offset can lag its last batch, so the end is where a fetch comes back empty)."""
    consumer.seek(tp, start)
    while True:
        batch = await consumer.getmany(tp, timeout_ms=_IDLE_MS)
        records = batch.get(tp, [])
        if not records:
            return
        for rec in records:
            yield rec


class _Plan(msgspec.Struct):
    todo: list[tuple[Record, bytes]]  # (latest record, the value to write in its place)
    current: int
    refused: int
    rewritten: int
    unreadable: list[str]


def _plan(guard: RecordGuard | None, topic: str, records: list[Record],
          transform: Transform | None = None) -> _Plan:
    """What to write again for one table's records: each key's latest record the readers
    accept, when it is not signed under the current key or `transform` changes it."""
    held: dict[bytes, Record] = {}
    shadowed: set[bytes] = set()  # a refused record came after the one readers hold
    refused = 0
    for rec in records:
        if rec.key is None:
            continue
        if guard is None or guard.verdict(topic, rec.key, rec.value, rec.headers) is None:
            held[rec.key] = rec
            shadowed.discard(rec.key)
        else:
            refused += 1
            shadowed.add(rec.key)
    out = _Plan([], 0, refused, 0, [])
    for key, rec in held.items():
        if rec.value is None:
            continue  # absent either way
        value: bytes | None = None
        if transform is not None:
            try:
                value = transform(key, rec.value)
            except UnsealError:
                out.unreadable.append(key.decode(errors="replace"))
                continue
            out.rewritten += value is not None
        signed = guard is None or guard.mac.signed_under_current(mac_header(rec.headers))
        if value is None and signed and key not in shadowed:
            out.current += 1
        else:
            out.todo.append((rec, rec.value if value is None else value))
    return out


async def resign_table(settings: Settings, producer: AIOKafkaProducer,
                       guard: RecordGuard | None, name: str, dry_run: bool,
                       transform: Transform | None = None,
                       progress: Progress | None = None) -> TableReport:
    """Write one table's latest records again (see the module), each value through
    `transform` when given."""
    topic = settings.topic(name)
    tp = TopicPartition(topic, 0)
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        if progress is not None:
            progress.step(f"{name} read")
        scanned = []
        async for rec in _records(consumer, tp, 0):
            scanned.append(rec)
            if progress is not None:
                progress.update(len(scanned))
        end = scanned[-1].offset + 1 if scanned else 0
        p = _plan(guard, topic, scanned, transform)
        report = TableReport(name, len(p.todo), p.current, p.refused, 0, p.rewritten,
                             p.unreadable)
        if dry_run or not p.todo:
            return report
        if progress is not None:
            progress.step(f"{name} write", len(p.todo))
        futures = []
        for rec, value in p.todo:
            futures.append(await producer.send(topic, value, key=rec.key))
            if progress is not None:
                progress.update(len(futures))
        todo = [rec for rec, _ in p.todo]
        ours = {rec.key: (await fut).offset for rec, fut in zip(todo, futures, strict=True)}
        # Written by the hub meanwhile: the newest such record before our copy wins again.
        newer: dict[bytes, Record] = {}
        after: set[bytes] = set()
        async for rec in _records(consumer, tp, end):
            if rec.key not in ours or rec.offset == ours[rec.key]:
                continue
            if guard is not None and guard.verdict(topic, rec.key, rec.value,
                                                   rec.headers) is not None:
                continue
            if rec.offset < ours[rec.key]:
                newer[rec.key] = rec
            else:
                after.add(rec.key)
        again = [rec for key, rec in newer.items() if key not in after]
        await asyncio.gather(*[await producer.send(topic, rec.value, key=rec.key)
                               for rec in again])
        return msgspec.structs.replace(report, conflicts=len(newer))
    finally:
        await consumer.stop()


async def resign_tables(settings: Settings, producer: AIOKafkaProducer, *,
                        dry_run: bool = False, say: Callable[[str], None] = print,
                        progress: Progress | None = None) -> list[TableReport]:
    """Sign every last-write-wins table again under the current key (see the module)."""
    guard = guard_for(settings)
    if guard is None:
        return []
    reports = []
    for name in TABLES:
        r = await resign_table(settings, producer, guard, name, dry_run, progress=progress)
        if progress is not None:
            progress.finish()
            progress.clear()
        say(f"{name}: {'would sign' if dry_run else 'signed'} {r.resigned} record(s) again "
            f"under key {guard.mac.key_id}, {r.current} already current, {r.refused} refused "
            f"(not written by this hub), {r.conflicts} changed meanwhile")
        reports.append(r)
    return reports
