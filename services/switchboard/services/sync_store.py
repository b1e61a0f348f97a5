"""The sync tables of one process: `sync.profiles`, `sync.status` and (in the sync worker)
`sync.pairs`, each followed by a `TableReader` into its view; writes answer once this
process's view has applied them (read-your-writes, like the registry)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import ConsumerRecord

from switchboard.errors import Unavailable
from switchboard.kafka import SYNC_JOBS, SYNC_PAIRS, SYNC_PROFILES, SYNC_STATUS, TableReader
from switchboard.services.runtime import Runtime
from switchboard.sync.tables import PairsView, ProfilesView, StatusView

log = logging.getLogger(__name__)


class SyncStore:
    def __init__(self, runtime: Runtime, *, pairs: bool) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.profiles = ProfilesView()
        self.status = StatusView()
        self.pairs = PairsView()
        self._readers: dict[str, TableReader] = {}
        views: list[tuple[str, Callable[[bytes | None, bytes | None], None]]] = [
            (SYNC_PROFILES, self.profiles.apply), (SYNC_STATUS, self.status.apply)]
        if pairs:
            views.append((SYNC_PAIRS, self.pairs.apply))
        for name, apply in views:
            self._readers[name] = TableReader(s, s.topic(name), _applier(apply))
        self.jobs_topic = s.topic(SYNC_JOBS)

    async def start(self) -> None:
        for reader in self._readers.values():
            await reader.start()

    async def stop(self) -> None:
        for reader in self._readers.values():
            await reader.stop()

    async def sync(self) -> None:
        """Apply everything written to the tables before this call."""
        timeout = self.runtime.settings.produce_timeout_s
        try:
            async with asyncio.timeout(timeout):
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
