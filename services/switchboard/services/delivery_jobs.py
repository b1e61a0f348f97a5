"""Redeliver and replay jobs: asyncio tasks of the API process that read deliveries back
from the `deliveries` topic and produce them again, unchanged (same deliveryId, so
receivers can deduplicate). Progress goes to the compacted `jobs` topic, so any API
process can answer `GET /api/v1/jobs/{jobId}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import TopicPartition

from switchboard.clock import now_ms
from switchboard.errors import TooManyRequests, Unavailable
from switchboard.ids import new_id
from switchboard.jobs import (
    HEARTBEAT_MS,
    MAX_JOB_RECORDS,
    MAX_JOBS_PER_HUB,
    JobKind,
    JobRecord,
    JobView,
    job_encoder,
)
from switchboard.kafka import DELIVERIES, JOBS, TableReader, make_consumer
from switchboard.model import DeliveryRef
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)
FLUSH = 500  # deliveries produced between waits for their acks (and a progress record)
SEEK_GAP = 2000  # read on rather than seek when the next wanted offset is this close
STALL_S = 30.0  # no record for this long while some are due: the topic is unreadable

# (expected deliveryId, where its record is); no ref: not known, counted as skipped.
Target = tuple[str, DeliveryRef | None]


class JobTooLarge(Exception):
    pass


class _Head(msgspec.Struct, rename="camel"):
    """The part of a `Delivery` a job checks; the record itself is produced as read."""

    delivery_id: str
    destination_id: str


_head_decoder = msgspec.json.Decoder(_Head)


class Progress:
    """A job's record, written at most once a second unless forced (heartbeat included)."""

    def __init__(self, jobs: Jobs, job: JobRecord) -> None:
        self.jobs = jobs
        self.job = job
        self._written = 0

    async def write(self, force: bool = False) -> None:
        now = now_ms()
        if not force and now - self._written < min(1000, HEARTBEAT_MS):
            return
        self.job.updated_at = now
        self._written = now
        s = self.jobs.runtime.settings
        async with asyncio.timeout(s.produce_timeout_s):
            await self.jobs.runtime.producer.send_and_wait(
                s.topic(JOBS), job_encoder.encode(self.job), key=self.job.job_id.encode())


class Jobs:
    """Runs this process's jobs and keeps the view of everyone's."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.view = JobView()
        self._table = TableReader(s, s.topic(JOBS), lambda r: self.view.apply(r.key, r.value))
        self._deliveries = s.topic(DELIVERIES)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._hub_of: dict[str, str] = {}  # job id → hub, from admission to the end

    async def start(self) -> None:
        await self._table.start()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._table.stop()

    async def get(self, job_id: str) -> JobRecord | None:
        timeout = self.runtime.settings.produce_timeout_s
        try:
            async with asyncio.timeout(timeout):  # the end-offset request too
                await self._table.sync(timeout=timeout)
        except Exception as exc:
            log.warning("jobs read failed: %r", exc)  # the cause is for the log, not the body
            raise Unavailable("broker_unavailable", "the jobs table is unavailable; retry") \
                from exc
        return self.view.get(job_id, now_ms())

    async def submit(self, hub_id: str, integration_id: str, kind: JobKind,
                     choose: Callable[[Progress], Awaitable[list[Target]]],
                     total: int = 0) -> str:
        """Record a new job as running, then run it: `choose` picks the deliveries
        (`total`: how many, when known already)."""
        if sum(1 for h in self._hub_of.values() if h == hub_id) >= MAX_JOBS_PER_HUB:
            raise TooManyRequests("too_many_jobs",
                                  f"at most {MAX_JOBS_PER_HUB} jobs run at once per hub",
                                  retry_after=5)
        now = now_ms()
        job = JobRecord(job_id=new_id(), hub_id=hub_id, integration_id=integration_id,
                        kind=kind, state="running", done=0, total=total, created_at=now,
                        updated_at=now)
        job_id = job.job_id
        self._hub_of[job_id] = hub_id  # taken before the first await: requests race here
        progress = Progress(self, job)
        try:
            await progress.write(force=True)  # durable before the caller hears of it
        except Exception as exc:
            del self._hub_of[job_id]
            raise Unavailable("broker_unavailable", "could not record the job; retry") from exc
        task = asyncio.create_task(self._run(progress, choose), name=f"job:{job_id}")
        self._tasks[job_id] = task

        def finished(_: object) -> None:
            self._tasks.pop(job_id, None)
            self._hub_of.pop(job_id, None)

        task.add_done_callback(finished)
        return job_id

    async def _run(self, p: Progress, choose: Callable[[Progress], Awaitable[list[Target]]]
                   ) -> None:
        try:
            targets = await choose(p)
            p.job.total = len(targets)
            await p.write(force=True)
            await self._reproduce(p, targets)
            p.job.state = "done"
        except asyncio.CancelledError:
            p.job.state, p.job.error = "failed", "interrupted"
            with contextlib.suppress(Exception):
                await asyncio.shield(p.write(force=True))
            raise
        except JobTooLarge:
            p.job.state, p.job.error = "failed", "too_many_records"
        except Exception as exc:
            log.exception("job %s failed", p.job.job_id)
            p.job.state, p.job.error = "failed", type(exc).__name__
        try:
            await p.write(force=True)
        except Exception as exc:  # shown as abandoned once its heartbeat is missed
            log.warning("job %s: final state not recorded: %r", p.job.job_id, exc)

    async def _consumer(self) -> AIOKafkaConsumer:
        consumer = make_consumer(self.runtime.settings, group_id=None)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _reproduce(self, p: Progress, targets: list[Target]) -> None:
        """Produce each target's record again, in offset order per partition (so per
        destination and conversation the original order holds)."""
        wanted: dict[int, dict[int, str]] = {}
        for delivery_id, ref in targets:
            if ref is None:
                p.job.skipped += 1
            else:
                wanted.setdefault(ref.partition, {})[ref.offset] = delivery_id
        if not wanted:
            return
        consumer = await self._consumer()
        try:
            partitions = await self.runtime.producer.partitions_for(self._deliveries)
            for partition in sorted(wanted):
                offsets = wanted[partition]
                produced = 0
                if partition in partitions:
                    tp = TopicPartition(self._deliveries, partition)
                    produced = await self._reproduce_partition(consumer, tp, offsets, p)
                p.job.skipped += len(offsets) - produced
        finally:
            await consumer.stop()

    async def _reproduce_partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                                   offsets: dict[int, str], p: Progress) -> int:
        end = await _end_offset(consumer, tp)
        pending: list[asyncio.Future[object]] = []
        produced = 0
        async with contextlib.aclosing(_read_at(consumer, tp, sorted(offsets), end, p)) as recs:
            async for rec in recs:
                # Only what this hub wrote is produced again (and so signed again).
                if not self._admit(rec):
                    continue
                try:
                    head = _head_decoder.decode(rec.value or b"")
                except msgspec.DecodeError:
                    continue
                # The ref must still name this integration's delivery (a recreated topic,
                # a stale ref): anything else would hand one integration another's data.
                if head.delivery_id != offsets[rec.offset] or \
                        head.destination_id != p.job.integration_id:
                    continue
                pending.append(await self.runtime.producer.send(
                    self._deliveries, rec.value, key=head.destination_id.encode()))
                produced += 1
                if len(pending) >= FLUSH:
                    await _flush(p, pending)
        await _flush(p, pending)
        return produced

    def _admit(self, rec: ConsumerRecord[bytes, bytes]) -> bool:
        """Written by this hub (a valid MAC, `switchboard.record_mac`); else refused."""
        guard = self.runtime.records
        return guard is None or guard.admit_record(rec)

    async def scan(self, p: Progress, integration_id: str, since: int, until: int
                   ) -> list[Target]:
        """The integration's deliveries written in [since, until], up to the end offsets of
        the moment the job started (what the job itself produces is not read again)."""
        consumer = await self._consumer()
        targets: list[Target] = []
        try:
            # A consumer without subscriptions knows no topic's partitions; the producer asks.
            parts = sorted(await self.runtime.producer.partitions_for(self._deliveries))
            tps = [TopicPartition(self._deliveries, n) for n in parts]
            ends = {tp: await _end_offset(consumer, tp) for tp in tps}
            firsts = await consumer.offsets_for_times({tp: since for tp in tps})
            for tp in tps:
                first = firsts.get(tp)
                if first is None or first.offset >= ends[tp]:
                    continue
                consumer.assign([tp])
                consumer.seek(tp, first.offset)
                async with contextlib.aclosing(_read_on(consumer, tp, ends[tp], p)) as recs:
                    async for rec in recs:
                        if rec.timestamp > until:
                            break
                        # A broker without a time index answers from the log start.
                        if rec.timestamp < since:
                            continue
                        if not self._admit(rec):
                            continue
                        try:
                            head = _head_decoder.decode(rec.value or b"")
                        except msgspec.DecodeError:
                            continue
                        if head.destination_id == integration_id:
                            ref = DeliveryRef(tp.partition, rec.offset)
                            targets.append((head.delivery_id, ref))
                            if len(targets) > MAX_JOB_RECORDS:
                                p.job.total = len(targets)
                                raise JobTooLarge
        finally:
            await consumer.stop()
        return targets


async def _end_offset(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    """The end offset of `tp`, which is then assigned to `consumer` alone.

    The embedded Tansu's ListOffsets answers the last batch's base offset + 1; the high
    watermark of a fetch is right on both brokers, so the larger of the two is the end.
    """
    listed = int((await consumer.end_offsets([tp]))[tp])
    consumer.assign([tp])
    if listed == 0:
        return 0
    consumer.seek(tp, listed - 1)
    await consumer.getmany(tp, timeout_ms=1000)
    return max(listed, consumer.highwater(tp) or 0)


async def _flush(p: Progress, pending: list[asyncio.Future[object]]) -> None:
    if not pending:
        return
    await asyncio.gather(*pending)  # acks=all: these are durable now
    p.job.done += len(pending)
    pending.clear()
    await p.write()


async def _batches(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, p: Progress
                   ) -> AsyncGenerator[list[ConsumerRecord[bytes, bytes]], None]:
    """Non-empty fetches of `tp` until `end`; TimeoutError after STALL_S without one."""
    quiet_since = time.monotonic()
    while True:
        batch = await consumer.getmany(tp, timeout_ms=1000)
        await p.write()  # heartbeat
        records = batch.get(tp, [])
        if records:
            quiet_since = time.monotonic()
            yield records
        elif await consumer.position(tp) >= end:
            return
        elif time.monotonic() - quiet_since > STALL_S:
            raise TimeoutError(f"{tp.topic}:{tp.partition} not readable")


async def _read_on(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, p: Progress
                   ) -> AsyncGenerator[ConsumerRecord[bytes, bytes], None]:
    """Records from the current position up to (not including) `end`."""
    if await consumer.position(tp) >= end:
        return
    async with contextlib.aclosing(_batches(consumer, tp, end, p)) as batches:
        async for records in batches:
            for rec in records:
                if rec.offset >= end:
                    return
                yield rec
            if records[-1].offset + 1 >= end:
                return


async def _read_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offsets: list[int],
                   end: int, p: Progress) -> AsyncGenerator[ConsumerRecord[bytes, bytes], None]:
    """The records at `offsets` (sorted) that still exist, seeking only across gaps."""
    wanted = [o for o in offsets if o < end]
    i = 0
    last_seek = -1
    while i < len(wanted):
        if wanted[i] == last_seek:  # a second seek there: nothing of it was read, it is gone
            i += 1
            continue
        last_seek = wanted[i]
        consumer.seek(tp, last_seek)
        async with contextlib.aclosing(_batches(consumer, tp, end, p)) as batches:
            async for records in batches:
                for rec in records:
                    # Offsets passed over are gone (retention, compaction): skipped.
                    while i < len(wanted) and wanted[i] < rec.offset:
                        i += 1
                    if i < len(wanted) and wanted[i] == rec.offset:
                        yield rec
                        i += 1
                position = records[-1].offset + 1
                while i < len(wanted) and wanted[i] < position:
                    i += 1
                if i >= len(wanted) or wanted[i] - position > SEEK_GAP:
                    break  # done, or far enough ahead to seek
