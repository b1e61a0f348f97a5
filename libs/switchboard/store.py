"""The registry's I/O half: write records to the topic and read them back through the view."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from aiokafka import AIOKafkaProducer, ConsumerRecord

from switchboard.errors import Unavailable
from switchboard.kafka import REGISTRY, TableReader
from switchboard.registry import (
    IntegrationRecord,
    Outcome,
    RegistryRecord,
    RegistryView,
    hub_key,
    integration_key,
    record_encoder,
)
from switchboard.settings import Settings

log = logging.getLogger(__name__)


class RegistryStore:
    """A process's registry: an in-memory `RegistryView` kept current from Kafka.

    Writes go through Kafka and return only once this process's view has applied them,
    so a write is visible to the writer's next read.
    """

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.view = RegistryView()
        self._settings = settings
        self._producer = producer
        self._topic = settings.topic(REGISTRY)
        self._reader = TableReader(settings, self._topic, self._apply)
        self._last_sync = 0.0

    def _apply(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        self.view.apply(rec.offset, rec.key, rec.value)

    @property
    def caught_up(self) -> bool:
        return self._reader.caught_up

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def _produce(self, key: bytes, value: bytes | None) -> Outcome:
        timeout = self._settings.produce_timeout_s
        try:
            async with asyncio.timeout(timeout):
                md = await self._producer.send_and_wait(self._topic, value, key=key)
            await self._reader.wait_for(md.offset, timeout=timeout)
        except Exception as exc:
            # The cause (with broker addresses) is for the operator's log, not the caller.
            log.warning("registry write failed: %r", exc)
            raise Unavailable("broker_unavailable", "the registry is unavailable; retry") \
                from exc
        outcome = self.view.outcome(md.offset)
        assert outcome is not None
        return outcome

    async def put(self, record: RegistryRecord) -> Outcome:
        """Write `record`; return the view's verdict on it.

        A rejected record is compensated at once (tombstone for a create, the current
        version again for an update) so compaction cannot keep a rejected write as the
        last word for its key.
        """
        current: RegistryRecord | None
        if isinstance(record, IntegrationRecord):
            key = integration_key(record.integration_id)
        else:
            key = hub_key(record.hub_id)
        outcome = await self._produce(key, record_encoder.encode(record))
        if not outcome.accepted:
            if isinstance(record, IntegrationRecord):
                current = self.view.integrations.get(record.integration_id)
            else:
                current = self.view.hubs.get(record.hub_id)
            if current is None:
                await self._produce(key, None)
            else:
                await self._produce(
                    key, record_encoder.encode(msgspec.structs.replace(
                        current, version=current.version + 1))
                )
        return outcome

    async def delete_integration(self, integration_id: str) -> None:
        await self._produce(integration_key(integration_id), None)

    async def delete_hub(self, hub_id: str) -> None:
        """Tombstone a hub (its integrations first: see `RegistryView`)."""
        await self._produce(hub_key(hub_id), None)

    async def sync(self) -> RegistryView:
        """The view, after applying everything written before this call (linearizable read)."""
        timeout = self._settings.produce_timeout_s
        try:
            # Bounded as a whole: asking for the end offset alone may wait out aiokafka's
            # 40 s request timeout when the broker is gone.
            async with asyncio.timeout(timeout):
                await self._reader.sync(timeout=timeout)
        except Exception as exc:
            log.warning("registry read failed: %r", exc)
            raise Unavailable("broker_unavailable", "the registry is unavailable; retry") \
                from exc
        return self.view

    async def lookup_integration(self, integration_id: str) -> IntegrationRecord | None:
        """Find an integration; on a miss, sync at most a few times a second and look again.

        Lets a hot path tolerate a just-created integration without letting unknown ids
        turn into a flood of broker round trips.
        """
        rec = self.view.integrations.get(integration_id)
        if rec is not None:
            return rec
        now = time.monotonic()
        if now - self._last_sync > 0.2:
            self._last_sync = now
            await self.sync()
        return self.view.integrations.get(integration_id)
