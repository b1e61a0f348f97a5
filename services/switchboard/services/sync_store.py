"""The sync tables of one process: `sync.profiles`, `sync.status`, `sync.runs` and (in the
sync worker) `sync.pairs`, each followed by a `TableReader` into its view; writes answer once this
process's view has applied them (read-your-writes, like the registry).

A reader starts the first time its table is read (`sync`) or written, and then follows it
(paced like every consumer, `switchboard.pacing`). In the sync worker the scheduler reads
`sync.profiles` once it owns a `sync.jobs` partition, `sync.status` from the first
schedule that falls due, and `sync.pairs` starts with the first run request: an idle hub
that has never synced follows `sync.profiles` alone (the API reads profiles and status
when asked).

A store that follows `sync.pairs` also prunes what deleted profiles leave there and on
`sync.status` (`switchboard.sync.prune`): when it sees a profile's delete marker, when
something is written for a profile that no longer exists (a run that was under way), when
its pairs reader starts (a half-done prune of a worker that stopped), and when asked
(`prune`, which the worker awaits for a run request of a deleted profile).

Every write of a profile's status also writes the runs it moved to `sync.runs`
(`switchboard.sync.runs`: the request, queued, started, progress every few seconds, the
end); the status tombstone of a profile's delete tombstones its runs there too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from weakref import WeakKeyDictionary

import msgspec
from aiokafka import ConsumerRecord

from switchboard import clock
from switchboard.errors import Unavailable
from switchboard.kafka import (
    SYNC_JOBS,
    SYNC_PAIRS,
    SYNC_PROFILES,
    SYNC_RUNS,
    SYNC_STATUS,
    TableReader,
)
from switchboard.services.runtime import Runtime
from switchboard.sync.options import Side
from switchboard.sync.profiles import credentials_context, seal_credentials, status_decoder
from switchboard.sync.prune import gone, pair_tombstones, status_tombstones
from switchboard.sync.runs import RunsView, run_encoder
from switchboard.sync.tables import PairsView, ProfilesView, StatusView

log = logging.getLogger(__name__)


_enc = msgspec.json.Encoder()
_PER_RUNTIME: WeakKeyDictionary[Runtime, SyncStore] = WeakKeyDictionary()


class SyncStore:
    """Shared by the services of one process (`for_runtime`): the API and the sync worker
    of `switchboard dev` follow each table once, not twice."""

    def __init__(self, runtime: Runtime, *, pairs: bool) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.profiles = ProfilesView()
        self.status = StatusView()
        self.pairs = PairsView()
        self.runs = RunsView()  # the hub's run listing: `sync.runs` and `sync.status`
        self._readers: dict[str, TableReader] = {}
        self._started: set[str] = set()
        self._starting = asyncio.Lock()
        self._users = 0
        self._pruning: asyncio.Task[None] | None = None
        self._prune_again = False
        self._prune_lock = asyncio.Lock()
        views: list[tuple[str, Callable[[bytes | None, bytes | None], None]]] = [
            (SYNC_PROFILES, self._apply_profile), (SYNC_STATUS, self._apply_status),
            (SYNC_RUNS, self.runs.apply_run)]
        for name, apply in views:
            self._readers[name] = TableReader(s, s.topic(name), _applier(apply))
        if pairs:
            self.follow_pairs()
        self.jobs_topic = s.topic(SYNC_JOBS)

    @classmethod
    def for_runtime(cls, runtime: Runtime, *, pairs: bool) -> SyncStore:
        """The process's store; `pairs`: this user also needs `sync.pairs` (the worker)."""
        store = _PER_RUNTIME.get(runtime)
        if store is None:
            store = _PER_RUNTIME[runtime] = cls(runtime, pairs=pairs)
        elif pairs:
            store.follow_pairs()
        return store

    def follow_pairs(self) -> None:
        if SYNC_PAIRS not in self._readers:
            s = self.runtime.settings
            self._readers[SYNC_PAIRS] = TableReader(s, s.topic(SYNC_PAIRS),
                                                    _applier(self.pairs.apply))

    def _apply_status(self, key: bytes | None, value: bytes | None) -> None:
        self.status.apply(key, value)
        self.runs.apply(key, value)

    def _apply_profile(self, key: bytes | None, value: bytes | None) -> None:
        self.profiles.apply(key, value)
        # A profile's delete marker (profile ids hold no ':'; other records of the topic do).
        if value is None and key is not None and b":" not in key:
            self._want_prune()

    def _want_prune(self) -> None:
        """Prune soon, in the background (once more if a prune is already under way)."""
        if SYNC_PAIRS not in self._started:
            # Only a store that folds sync.pairs knows what to tombstone; one whose pairs
            # reader has not started yet prunes when it starts (delete markers seen while
            # replaying sync.profiles must not start it).
            return
        if self._pruning is not None and not self._pruning.done():
            self._prune_again = True
            return
        self._pruning = asyncio.get_running_loop().create_task(self._prune_loop())

    async def _prune_loop(self) -> None:
        while True:
            self._prune_again = False
            try:
                await self.prune()
            except Exception as exc:  # the next trigger (or request) tries again
                log.warning("sync: pruning deleted profiles failed: %r", exc)
            if not self._prune_again:
                return

    async def prune(self) -> int:
        """Tombstone the pairs, watermarks, status and report of every deleted profile
        (`switchboard.sync.prune`); the number of keys written. Idempotent."""
        if SYNC_PAIRS not in self._readers:
            return 0
        async with self._prune_lock:
            await self.sync_all()
            first = gone(self.profiles.profiles, self.pairs, self.status,
                         self.runs.profile_ids())
            if not first:
                return 0
            # The profiles read again, after the pairs and status above: a profile still
            # missing now was deleted (its record always precedes its pairs and status).
            await self.sync_all()
            written = 0
            for pid in sorted(first & gone(self.profiles.profiles, self.pairs, self.status,
                                           self.runs.profile_ids())):
                pairs = pair_tombstones(pid, self.pairs)
                status = status_tombstones(pid, self.status)
                runs = [j.encode() for j in self.runs.job_ids_of(pid)]
                await self.write_many(SYNC_PAIRS, [(k, None) for k in pairs])
                await self.write_many(SYNC_RUNS, [(k, None) for k in runs])
                await self.write_many(SYNC_STATUS, [(k, None) for k in status])
                log.info("sync: pruned deleted profile %s: %d pair(s) and watermark(s), "
                         "%d status record(s), %d run(s)", pid, len(pairs), len(status),
                         len(runs))
                written += len(pairs) + len(status) + len(runs)
            return written

    def _written_for_gone(self, table: str, key: bytes) -> None:
        """Something written for a profile that no longer exists (a run under way when it
        was deleted): prune it again afterwards."""
        parts = key.split(b":", 2)
        if len(parts) >= 2 and parts[1].decode(errors="replace") not in self.profiles.profiles:
            self._want_prune()

    async def start(self) -> None:
        """Register a user of the store (each calls it once). Each reader starts the first
        time its table is read or written (module docstring)."""
        self._users += 1

    def following(self, table: str) -> bool:
        return table in self._started

    async def _ensure(self, tables: Collection[str]) -> None:
        async with self._starting:
            fresh = False
            for name, reader in self._readers.items():
                if name in tables and name not in self._started:
                    await reader.start()
                    self._started.add(name)
                    fresh |= name == SYNC_PAIRS
            if fresh:  # what a stopped worker left half-pruned
                self._want_prune()

    async def stop(self) -> None:
        """Stop the readers once the last user stops."""
        self._users -= 1
        if self._users > 0:
            return
        if self._pruning is not None:
            self._pruning.cancel()
            await asyncio.gather(self._pruning, return_exceptions=True)
            self._pruning = None
        for name in list(self._started):
            await self._readers[name].stop()
            self._started.discard(name)

    async def sync_all(self) -> None:
        """`sync` every table this store follows (the worker's runs and prunes)."""
        await self.sync(*self._readers)

    async def sync(self, *tables: str) -> None:
        """Apply everything written to `tables` before this call; by default to
        `sync.profiles` and `sync.status` (all the API and the webhooks read; the run
        listing also reads `sync.runs`)."""
        timeout = self.runtime.settings.produce_timeout_s
        wanted = tables or (SYNC_PROFILES, SYNC_STATUS)
        try:
            async with asyncio.timeout(timeout):
                await self._ensure(wanted)
                for name, reader in self._readers.items():
                    if name in wanted:
                        await reader.sync(timeout=timeout)
        except Exception as exc:
            log.warning("sync tables read failed: %r", exc)
            raise Unavailable("broker_unavailable", "the sync tables are unavailable; retry") \
                from exc

    async def write(self, table: str, key: bytes, value: bytes | None, *,
                    applied: bool = True) -> None:
        """Write one table record durably and (`applied`) wait until this process's view
        has it. A run's pairs need only be durable: nothing reads them back before the
        run's end, and every run starts by catching the view up (`sync`); waiting for the
        view too cost a fetch round trip per created record."""
        s = self.runtime.settings
        status = table == SYNC_STATUS and key.startswith(b"status:")
        if status and value is None:  # a profile deleted: its runs with it
            await self.sync(SYNC_RUNS)
            pid = key[len(b"status:"):].decode()
            await self.write_many(SYNC_RUNS, [(j.encode(), None)
                                              for j in self.runs.job_ids_of(pid)])
        try:
            async with asyncio.timeout(s.produce_timeout_s):
                await self._ensure((table,))
                md = await self.runtime.producer.send_and_wait(s.topic(table), value, key=key)
            if applied:
                await self._readers[table].wait_for(md.offset, timeout=s.produce_timeout_s)
        except Exception as exc:
            log.warning("sync table write failed: %r", exc)
            raise Unavailable("broker_unavailable", "the sync tables are unavailable; retry") \
                from exc
        if status and value is not None:
            await self._write_runs(value)
        if value is not None and table in (SYNC_PAIRS, SYNC_STATUS):
            self._written_for_gone(table, key)

    async def _write_runs(self, status: bytes) -> None:
        """The runs a status write moved, to `sync.runs` (durable, not waited for in the
        view: `mark_saved`). Its view has the status already (`write` waits for it)."""
        s = self.runtime.settings
        runs = self.runs.unsaved(status_decoder.decode(status))
        if not runs:
            return
        try:
            async with asyncio.timeout(s.produce_timeout_s):
                await self._ensure((SYNC_RUNS,))
                sent = [await self.runtime.producer.send(
                    s.topic(SYNC_RUNS), run_encoder.encode(r), key=r.job_id.encode())
                    for r in runs]
                for f in sent:
                    await f
        except Exception as exc:
            log.warning("sync runs write failed: %r", exc)
            raise Unavailable("broker_unavailable", "the sync tables are unavailable; retry") \
                from exc
        for r in runs:
            self.runs.mark_saved(r)

    async def write_many(self, table: str, items: list[tuple[bytes, bytes | None]]) -> None:
        """Write table records durably (in order, pipelined) and wait until this process's
        view has them all."""
        if not items:
            return
        s = self.runtime.settings
        try:
            async with asyncio.timeout(s.produce_timeout_s * (1 + len(items) // 1000)):
                await self._ensure((table,))
                topic = s.topic(table)
                sent = [await self.runtime.producer.send(topic, value, key=key)
                        for key, value in items]
                last = max([(await f).offset for f in sent])
            await self._readers[table].wait_for(last, timeout=s.produce_timeout_s)
        except Exception as exc:
            log.warning("sync table write failed: %r", exc)
            raise Unavailable("broker_unavailable", "the sync tables are unavailable; retry") \
                from exc

    async def replace_credential(self, profile_id: str, side: Side, name: str, old: str,
                                 new: str, drop: Collection[str] = ()) -> bool:
        """Seal `new` into the profile in place of credential `name` (a refresh token the
        provider rotated), dropping `drop` with it; False, writing nothing, when the
        profile is gone or holds another value than `old` (updated meanwhile: the newer
        credentials win)."""
        await self.sync()
        rec = self.profiles.profiles.get(profile_id)
        if rec is None:
            return False
        spec = rec.side(side)
        sealer = self.runtime.sealer
        stored = spec.credentials.get(name)
        if stored is None or sealer.open(
                stored, credentials_context(profile_id, side, name)).decode() != old:
            return False
        creds = {k: v for k, v in spec.credentials.items() if k not in drop}
        creds.update(seal_credentials(sealer, profile_id, side, {name: new}))
        fresh = msgspec.structs.replace(spec, credentials=creds)
        rec = msgspec.structs.replace(rec, updated_at=clock.now_ms(), **{side: fresh})
        await self.write(SYNC_PROFILES, profile_id.encode(), _enc.encode(rec))
        log.info("sync %s: %s credential %s rotated by the provider, stored", profile_id,
                 side, name)
        return True

    async def request(self, key: bytes, value: bytes) -> None:
        """Put a run request on `sync.jobs` (durable once this returns)."""
        s = self.runtime.settings
        try:
            async with asyncio.timeout(s.produce_timeout_s):
                await self.runtime.producer.send_and_wait(self.jobs_topic, value, key=key)
        except Exception as exc:
            log.warning("sync run request failed: %r", exc)
            raise Unavailable("broker_unavailable", "could not queue the run; retry") from exc


def _applier(apply: Callable[[bytes | None, bytes | None], None]
             ) -> Callable[[ConsumerRecord[bytes, bytes]], None]:
    return lambda rec: apply(rec.key, rec.value)
