"""`switchboard serve sync`: the `sync` consumer group. Takes run requests from
`sync.jobs` (keyed by profile, so one profile's runs are taken in order by one member),
runs each (`sync_runner`) and commits its offset only when the run has finished — a
worker killed half-way leaves the request for its successor, which resumes it.

A run's state goes to `sync.status` as the seeds show it: QUEUED when taken, EXECUTING
with progress (operations done / total) while it runs, IDLE with the modules' counts,
`lastSuccessfulSync` or `errMessage` / `errSvcId` when it ends; each transition is also a
`sync:*` event for the hub's System integrations (`switchboard.sync.events`).

Each member also fires the schedules of the profiles whose `sync.jobs` partition it owns
(`sync_scheduler`); a slot's run is recognised by its slot, so a slot fired twice around
a rebalance runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from switchboard.clock import now_ms
from switchboard.errors import SwitchboardError
from switchboard.kafka import SYNC_JOBS, SYNC_STATUS, start_group_consumer, stop_consuming
from switchboard.pacing import Pacer
from switchboard.services.runtime import Runtime
from switchboard.services.sync_connectors import ConnectorContext, build
from switchboard.services.sync_requests import publish_quietly
from switchboard.services.sync_runner import RunFailed, Runner
from switchboard.services.sync_scheduler import Scheduler
from switchboard.services.sync_store import SyncStore
from switchboard.supervision import supervised
from switchboard.sync.connector import Connector
from switchboard.sync.events import Transition, sync_event
from switchboard.sync.options import SIDES, Side
from switchboard.sync.profiles import (
    ProfileRecord,
    ReportRecord,
    RunJob,
    StatusRecord,
    job_decoder,
    open_credentials,
)
from switchboard.sync.tables import report_key, status_key

log = logging.getLogger(__name__)
GROUP = "switchboard-sync"
_enc = msgspec.json.Encoder()
PROGRESS_EVERY_S = 1.0


class _Revoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """A partition taken away stops the run of its job: its next owner redoes it, and
    two workers must never run one profile at once."""

    def __init__(self, worker: SyncWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        task, tp = self.worker._current, self.worker._current_tp
        if task is not None and tp in revoked:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


SYNC_HEARTBEAT_MS = 2000


class SyncWorker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = SyncStore.for_runtime(runtime, pairs=True)
        self._consumer: AIOKafkaConsumer | None = None
        self._pacer: Pacer | None = None
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Task[None] | None = None
        self._current_tp: TopicPartition | None = None
        self.scheduler = Scheduler(self)

    async def start(self) -> None:
        await self.store.start()
        s = self.runtime.settings
        self._consumer = await start_group_consumer(
            s, s.topic(SYNC_JOBS), GROUP, lambda c: _Revoke(self),
            # A run may take hours (an initial sync behind a rate limit); membership is
            # kept by heartbeats, and a revoke cancels the run.
            max_poll_interval_ms=24 * 3600 * 1000, max_poll_records=20,
            # Runs are rare and long: half the heartbeats of the router's and deliverer's
            # keeps an idle hub idle; the session stays as short as theirs (a longer one
            # made each join wait 2 s more on Tansu), so a dead worker's runs move as fast.
            heartbeat_interval_ms=SYNC_HEARTBEAT_MS,
            session_timeout_ms=max(s.session_timeout_ms, 3 * SYNC_HEARTBEAT_MS))
        # Idle most of the time: on Tansu the pacer pauses the consumer (a run request
        # from this process wakes it at once, others within fetch_idle_poll_ms).
        self._pacer = Pacer(self._consumer, s, [s.topic(SYNC_JOBS)])
        self._task = supervised(self._run(), name="sync")
        self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        if self._current is not None:
            self._current.cancel()
            await asyncio.gather(self._current, return_exceptions=True)
        if self._pacer is not None:
            self._pacer.close()
        await stop_consuming(self._task, self._consumer)
        await self.store.stop()

    async def _run(self) -> None:
        assert self._consumer is not None and self._pacer is not None
        consumer, pacer = self._consumer, self._pacer
        while True:
            try:
                batch = await pacer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for rec in records:
                        if tp not in consumer.assignment():
                            break
                        if not await self._take(tp, rec):
                            break  # cancelled by a revoke: its next owner redoes it
                        with contextlib.suppress(CommitFailedError):
                            await consumer.commit({tp: rec.offset + 1})
            except asyncio.CancelledError:
                raise
            except (KafkaError, TimeoutError, SwitchboardError) as exc:
                log.warning("sync: %r; resuming from the last committed offsets", exc)
                await asyncio.sleep(0.5)

    async def _take(self, tp: TopicPartition, rec: ConsumerRecord[bytes, bytes]) -> bool:
        """Run one request; False if it was cancelled (not finished)."""
        if rec.value is None:
            return True
        try:
            job = job_decoder.decode(rec.value)
        except msgspec.DecodeError:
            log.warning("sync: undecodable request at %s offset %d", tp, rec.offset)
            return True
        try:
            await self.store.sync_all()  # the tables as of this request (sync.pairs starts then)
        except SwitchboardError as exc:  # the broker went away: take this request again
            log.warning("sync: tables unavailable for run %s: %r", job.job_id, exc)
            assert self._consumer is not None
            self._consumer.seek(tp, rec.offset)
            await asyncio.sleep(0.5)
            return False
        self._current_tp = tp
        self._current = asyncio.create_task(self._execute(job))
        try:
            await asyncio.wait({self._current})
            if self._current.cancelled():
                return False
            try:
                self._current.result()
            except SwitchboardError as exc:  # the broker went away: redo this request
                log.warning("sync: run %s interrupted: %r", job.job_id, exc)
                assert self._consumer is not None
                self._consumer.seek(tp, rec.offset)
                await asyncio.sleep(0.5)
                return False
            return True
        finally:
            self._current = None
            self._current_tp = None

    async def _status(self, job: RunJob, event: Transition | None = None,
                      profile: ProfileRecord | None = None, **changes: object) -> None:
        old = self.store.status.status.get(job.profile_id) or StatusRecord(
            profile_id=job.profile_id, hub_id=job.hub_id)
        now = now_ms()
        new = msgspec.structs.replace(old, updated_at=now, **changes)
        await self.store.write(SYNC_STATUS, status_key(job.profile_id), _enc.encode(new))
        if event is not None:
            name = profile.name if profile is not None else ""
            await publish_quietly(self.runtime, sync_event(event, job, new, profile_name=name,
                                                           now_ms=now))

    def _connectors(self, profile: ProfileRecord) -> dict[Side, Connector]:
        out: dict[Side, Connector] = {}
        for side in SIDES:
            spec = profile.side(side)
            try:
                creds = open_credentials(self.runtime.sealer, profile, side)
                out[side] = build(spec.kind, ConnectorContext(
                    configuration=spec.configuration, credentials=creds,
                    settings=self.runtime.settings, http=self.runtime.http,
                    runtime=self.runtime, rotate=functools.partial(
                        self.store.replace_credential, profile.profile_id, side)))
            except SwitchboardError as exc:
                raise RunFailed(side, f"{side}: {exc.description}") from exc
        return out

    async def _execute(self, job: RunJob) -> None:
        await self.store.sync_all()
        profile = self.store.profiles.profiles.get(job.profile_id)
        if profile is None:
            # Deleted (its delete asks for this request): what it left on sync.pairs and
            # sync.status is tombstoned before the request is committed, so a worker
            # stopped half-way leaves the rest to its successor.
            await self.store.prune()
            return
        if profile.hub_id != job.hub_id:
            return
        before = self.store.status.status.get(job.profile_id)
        if (job.slot is not None and before is not None and before.last_slot_done is not None
                and job.slot <= before.last_slot_done):
            # This slot's run finished already: a second fire of it (around a rebalance).
            if before.job_id == job.job_id and before.sync_state == "REQUESTED":
                await self._status(job, sync_state="IDLE")  # what the fire wrote, undone
            return
        await self._status(job, "queued", profile, sync_state="QUEUED",
                           running_job_id=job.job_id)
        started = now_ms()
        last = 0.0

        async def progress(done: int, total: int) -> None:
            nonlocal last
            if done == total or time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                await self._status(job, sync_state="EXECUTING", done=done, total=total)

        await self._status(job, "started", profile, sync_state="EXECUTING", started_at=started,
                           done=0, total=0)
        runner: Runner | None = None
        error: RunFailed | None = None
        try:
            if not profile.connected:
                raise RunFailed(None, "the profile is disconnected: update its credentials")
            runner = Runner(self.store, profile, job, self._connectors(profile), progress)
            await runner.run()
        except RunFailed as exc:
            error = exc
        except SwitchboardError as exc:
            if exc.code == "broker_unavailable":
                raise  # not the run's fault: redone from the uncommitted request
            error = RunFailed(None, exc.description)
        except Exception:  # a bug: recorded on the profile, the request is not redone
            log.exception("sync %s: run %s failed", profile.profile_id, job.job_id)
            error = RunFailed(None, "internal error")
        await self.store.sync_all()
        # A newer request waits behind this one: the profile is not idle yet.
        current = self.store.status.status.get(job.profile_id)
        newer = current is not None and current.job_id not in (None, job.job_id)
        state = "REQUESTED" if newer else "IDLE"
        now = now_ms()
        if runner is not None and runner.reports:
            report = ReportRecord(profile_id=profile.profile_id, hub_id=profile.hub_id,
                                  job_id=job.job_id, created_at=now, reports=runner.reports)
            await self.store.write(SYNC_STATUS, report_key(profile.profile_id),
                                   _enc.encode(report))
        counts = runner.counts if runner is not None else {}
        slot = job.slot if job.slot is not None else (current.last_slot_done if current
                                                      else None)
        if error is None:
            assert runner is not None
            await self._status(job, "finished", profile, sync_state=state,
                               last_job_id=job.job_id, modules=counts, done=runner.done,
                               total=runner.total, last_successful_sync=now,
                               err_message=None, err_svc_id=None, err_timestamp=None,
                               running_job_id=None, last_slot_done=slot)
        else:
            log.warning("sync %s: run %s failed: %s", profile.profile_id, job.job_id,
                        error.description)
            await self._status(job, "failed", profile, sync_state=state,
                               last_job_id=job.job_id, modules=counts,
                               err_message=error.description[:500], err_svc_id=error.side,
                               err_timestamp=now, running_job_id=None, last_slot_done=slot)
