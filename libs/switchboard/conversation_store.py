"""The conversations table's I/O half: follow the compacted topic, write through it."""

from __future__ import annotations

import asyncio

import msgspec
from aiokafka import AIOKafkaProducer, ConsumerRecord

from switchboard.conversations import (
    ConversationRecord,
    ConversationTable,
    conversation_encoder,
    touch_due,
)
from switchboard.errors import Unavailable
from switchboard.kafka import CONVERSATIONS, TableReader
from switchboard.settings import Settings


class ConversationStore:
    """Every process's view of the conversations topic.

    `put` returns once the record is durable and visible locally, so the next message
    of that conversation (in this process, or in any process that `sync`s) sees it.
    """

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.table = ConversationTable(settings.conversation_cache_size,
                                       settings.state_dir or None)
        # Refresh `last_active_at` this often at most: a thirtieth of the timeout.
        self._touch_ms = int(settings.conversation_timeout_s * 1000 / 30)
        self._settings = settings
        self._producer = producer
        self._topic = settings.topic(CONVERSATIONS)
        self._reader = TableReader(settings, self._topic, self._apply)

    def _apply(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        self.table.apply(rec.key, rec.value)

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()
        self.table.close()

    def get(self, conversation_id: str) -> ConversationRecord | None:
        return self.table.get(conversation_id)

    def by_thread(self, integration_id: str, thread: str) -> ConversationRecord | None:
        return self.table.by_thread(integration_id, thread)

    async def sync(self) -> None:
        """Apply everything written to the table before this call."""
        try:
            await self._reader.sync(timeout=self._settings.produce_timeout_s * 6)
        except Exception as exc:
            raise Unavailable("broker_unavailable", "conversations table unavailable") from exc

    async def put(self, rec: ConversationRecord) -> None:
        """Write `rec` durably (acks=all) and make it visible here at once."""
        timeout = self._settings.produce_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._producer.send_and_wait(
                    self._topic, conversation_encoder.encode(rec),
                    key=rec.conversation_id.encode())
        except Exception as exc:
            raise Unavailable("broker_unavailable", "could not record the conversation") from exc
        self.table.put(rec)

    async def record_thread(self, conversation_id: str, integration_id: str, thread: str) -> None:
        """Remember that `thread` at `integration_id` carries `conversation_id`."""
        current = self.get(conversation_id)
        if current is None or current.threads.get(integration_id) == thread:
            return
        threads = {**current.threads, integration_id: thread}
        await self.put(msgspec.structs.replace(current, threads=threads))

    async def touch(self, rec: ConversationRecord, now_ms: int) -> asyncio.Future[object] | None:
        """Note activity on `rec` if its last note is old enough; the future says when
        the note is durable (None: nothing to write)."""
        if not touch_due(rec, now_ms, self._touch_ms):
            return None
        fresh = msgspec.structs.replace(rec, last_active_at=now_ms)
        fut: asyncio.Future[object] = await self._producer.send(
            self._topic, conversation_encoder.encode(fresh), key=rec.conversation_id.encode())
        self.table.put(fresh)
        return fut

    def inactive(self, now_ms: int, limit: int = 1000) -> list[ConversationRecord]:
        """Conversations past the inactivity timeout at `now_ms`, oldest first."""
        before = now_ms - int(self._settings.conversation_timeout_s * 1000)
        return self.table.inactive(before, limit)

    async def end(self, conversation_id: str) -> None:
        """End a conversation: a tombstone (durable), and gone from this process's view."""
        timeout = self._settings.produce_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._producer.send_and_wait(self._topic, None,
                                                   key=conversation_id.encode())
        except Exception as exc:
            raise Unavailable("broker_unavailable", "could not end the conversation") from exc
        self.table.delete(conversation_id)
