"""The sync tables of one process: `sync.profiles`, `sync.status` and (in the sync worker)
`sync.pairs`, each followed by a `TableReader` into its view; writes answer once this
process's view has applied them (read-your-writes, like the registry)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from weakref import WeakKeyDictionary

from aiokafka import ConsumerRecord

from switchboard.errors import Unavailable
from switchboard.kafka import SYNC_JOBS, SYNC_PAIRS, SYNC_PROFILES, SYNC_STATUS, TableReader
from switchboard.services.runtime import Runtime
from switchboard.sync.tables import PairsView, ProfilesView, StatusView

log = logging.getLogger(__name__)


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
        self._readers: dict[str, TableReader] = {}
        self._started: set[str] = set()
        self._starting = asyncio.Lock()
        self._users = 0
        views: list[tuple[str, Callable[[bytes | None, bytes | None], None]]] = [
            (SYNC_PROFILES, self.profiles.apply), (SYNC_STATUS, self.status.apply)]
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

    async def start(self) -> None:
        """Register a user of the store (each calls it once). The readers start with the
        first `sync` or `write`: a hub that never syncs records never reads these topics,
        so an idle `dev` stays idle."""
        self._users += 1

    async def _ensure(self) -> None:
        async with self._starting:
            for name, reader in self._readers.items():
                if name not in self._started:
                    await reader.start()
                    self._started.add(name)

    async def stop(self) -> None:
        """Stop the readers once the last user stops."""
        self._users -= 1
        if self._users > 0:
            return
        for name in list(self._started):
            await self._readers[name].stop()
            self._started.discard(name)

    async def sync(self) -> None:
        """Apply everything written to the tables before this call."""
        timeout = self.runtime.settings.produce_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._ensure()
                for reader in self._readers.values():
                    await reader.sync(timeout=timeout)
        except Exception as exc:
            log.warning("sync tables read failed: %r", exc)
            raise Unavailable("broker_unavailable", "the sync tables are unavailable; retry") \
                from exc

    async def write(self, table: str, key: bytes, value: bytes | None) -> None:
        """Write one table record durably and wait until this process's view has it."""
        s = self.runtime.settings
        try:
            async with asyncio.timeout(s.produce_timeout_s):
                await self._ensure()
                md = await self.runtime.producer.send_and_wait(s.topic(table), value, key=key)
            await self._readers[table].wait_for(md.offset, timeout=s.produce_timeout_s)
        except Exception as exc:
            log.warning("sync table write failed: %r", exc)
            raise Unavailable("broker_unavailable", "the sync tables are unavailable; retry") \
                from exc

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
