"""The stream's acked cursors: the compacted `stream-cursors` topic, folded into memory.

Key: the integration id; value: the last cursor its client acked. Every gateway process
follows the whole topic, so a client that reconnects to any process without a cursor
resumes after its last ack.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from aiokafka import ConsumerRecord

from switchboard import clock
from switchboard.kafka import STREAM_CURSORS, TableReader
from switchboard.services.runtime import Runtime
from switchboard.services.stream_protocol import (
    Cursor,
    StoredCursor,
    encoder,
    parse_cursor,
    stored_decoder,
)

log = logging.getLogger(__name__)


class AckTable:
    """Integration id → last acked cursor, read from and written to `stream-cursors`."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._topic = self._settings.topic(STREAM_CURSORS)
        self._acked: dict[str, Cursor] = {}
        self._reader = TableReader(self._settings, self._topic, self._apply)

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def sync(self, timeout: float) -> None:
        """Catch up with everything written before the call (by any process)."""
        await self._reader.sync(timeout=timeout)

    def get(self, integration_id: str) -> Cursor | None:
        return self._acked.get(integration_id)

    def _apply(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        if rec.key is None:
            return
        iid = rec.key.decode(errors="replace")
        if rec.value is None:
            self._acked.pop(iid, None)
            return
        try:
            cursor = parse_cursor(stored_decoder.decode(rec.value).cursor)
        except msgspec.DecodeError:
            cursor = None
        if cursor is None:
            log.warning("stream-cursors: unreadable value for %s at offset %d", iid, rec.offset)
            return
        self._acked[iid] = cursor

    async def persist(self, integration_id: str, cursor: Cursor) -> bool:
        """Write `cursor` as the integration's last ack; False if it could not be written
        (not fatal: an unpersisted ack only means those deliveries may be sent again)."""
        value = encoder.encode(StoredCursor(cursor=str(cursor), acked_at=clock.now_ms()))
        try:
            async with asyncio.timeout(self._settings.produce_timeout_s):
                await self._runtime.producer.send_and_wait(
                    self._topic, value, key=integration_id.encode())
        except Exception as exc:
            log.warning("stream %s: cannot persist cursor %s: %r", integration_id, cursor, exc)
            return False
        # This process knows at once; the table reader confirms it (and tells the others).
        self._acked[integration_id] = cursor
        return True
