"""What every service of one process shares: settings, the producer, the registry view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from switchboard.conversation_store import ConversationStore
from switchboard.errors import Unavailable
from switchboard.kafka import ACTIVITIES, make_producer, run_with_broker_retry
from switchboard.kafka_topics import ensure_topics
from switchboard.keys import PURPOSE_SESSIONS
from switchboard.metrics import Metrics
from switchboard.model import Activity, activity_encoder
from switchboard.record_mac import guard_for
from switchboard.sealer import Sealer
from switchboard.services.http_client import HttpClient
from switchboard.settings import Settings
from switchboard.store import RegistryStore

if TYPE_CHECKING:
    from switchboard.services.tracing import Tracing

log = logging.getLogger(__name__)

# Conversations whose `activities` partition is remembered (oldest forgotten first).
PARTITION_CACHE_SIZE = 100_000


class Runtime:
    """Started once per process; services borrow its producer and registry view."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Secrets at rest; visitor session tokens under a key derived for that purpose.
        self.sealer = Sealer.from_b64(settings.sealing_keys)
        self.session_sealer = self.sealer.for_purpose(PURPOSE_SESSIONS)
        # Signs what this process writes to its topics, refuses what the hub did not write.
        self.records = guard_for(settings)
        self.metrics = Metrics(settings.metrics_max_hubs)
        # None unless SWITCHBOARD_OTEL_ENDPOINT is set: then, and only then, the
        # OpenTelemetry SDK is imported; every traced place checks this one attribute.
        self.tracing: Tracing | None = None
        if settings.otel_endpoint:
            from switchboard.services.tracing import Tracing

            self.tracing = Tracing(settings)
        self._producer: AIOKafkaProducer | None = None
        self._registry: RegistryStore | None = None
        self._conversations: ConversationStore | None = None
        self._http: HttpClient | None = None
        self._started = False
        self._activities = settings.topic(ACTIVITIES)
        self._partitions: dict[bytes, int] = {}
        self._partition_count = 0
        # Stopped before the producer: parts started on demand (the Syncro budget reader).
        self._on_stop: list[Callable[[], Awaitable[None]]] = []

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "Runtime.start() first"
        return self._producer

    @property
    def registry(self) -> RegistryStore:
        assert self._registry is not None, "Runtime.start() first"
        return self._registry

    @property
    def conversations(self) -> ConversationStore:
        assert self._conversations is not None, "Runtime.start() first"
        return self._conversations

    @property
    def http(self) -> HttpClient:
        """The client for provider APIs (Twilio, Graph, Slack), bounded by one timeout."""
        assert self._http is not None, "Runtime.start() first"
        return self._http

    async def publish(self, activity: Activity) -> None:
        """Write `activity` to `activities` keyed by conversation; return once durable.

        Acked means durable: callers answer their provider only after this returns.
        """
        key = activity.conversation_id.encode()
        started = time.perf_counter()
        try:
            partition = await self.activities_partition(key)
            async with asyncio.timeout(self.settings.produce_timeout_s):
                if self.tracing is None:
                    await self.producer.send_and_wait(
                        self._activities, activity_encoder.encode(activity), key=key,
                        partition=partition)
                else:
                    # The record names its produce span: the router continues the trace.
                    with self.tracing.producing(self._activities, ACTIVITIES, partition,
                                                activity) as headers:
                        await self.producer.send_and_wait(
                            self._activities, activity_encoder.encode(activity), key=key,
                            partition=partition, headers=headers)
        except Exception as exc:  # KafkaError, TimeoutError: either way not durable
            raise Unavailable("broker_unavailable", "could not store the activity; retry") from exc
        metrics = self.metrics
        metrics.produce_seconds.observe(time.perf_counter() - started)
        metrics.activities_in.labels(metrics.hub(activity.hub_id)).inc()

    async def activities_partition(self, key: bytes) -> int:
        """The `activities` partition of a conversation: Kafka's default partitioner
        (murmur2, in pure Python in aiokafka), remembered per key."""
        partition = self._partitions.get(key)
        if partition is None:
            if not self._partition_count:
                parts = await self.producer.partitions_for(self._activities)
                self._partition_count = len(parts)
            partition = (murmur2(key) & 0x7FFFFFFF) % self._partition_count
            if len(self._partitions) >= PARTITION_CACHE_SIZE:
                self._partitions.pop(next(iter(self._partitions)))
            self._partitions[key] = partition
        return partition

    def on_stop(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Run `stop` when the runtime stops (before its producer and views)."""
        self._on_stop.append(stop)

    async def start(self) -> None:
        if self._started:
            return
        # aiokafka clients bind to the running loop, so they are made here, not in __init__.
        self._producer = make_producer(self.settings)
        self._registry = RegistryStore(self.settings, self._producer)
        self._conversations = ConversationStore(self.settings, self._producer)
        await run_with_broker_retry("topics", lambda: ensure_topics(self.settings))
        await run_with_broker_retry("producer", self.producer.start)
        await self.registry.start()
        await self.conversations.start()
        # Provider base URLs (Twilio, Graph, Slack) are operator settings, not tenant
        # input, so the SSRF policy for webhook destinations does not apply to them (the
        # test fakes and any self-hosted stand-in live on private addresses). Started
        # last, so a start that fails on the broker leaves no session open.
        # Provider calls are spans of the trace, but carry no `traceparent`: the
        # providers' APIs are not ours to join (webhook deliveries do carry it).
        self._http = HttpClient(timeout_s=self.settings.provider_timeout_s,
                                allow_private=True, tracing=self.tracing, propagate=False)
        await self._http.start()
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            # Each part stops on its own: one failing (broker gone) must not leak the rest.
            for part in (*self._on_stop, self.conversations.stop, self.registry.stop,
                         self.http.close):
                try:
                    await part()
                except Exception as exc:
                    log.warning("runtime stop: %r", exc)
        finally:
            # Bounded: with the broker gone, flushing what is queued must not hang shutdown.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.produce_timeout_s + 1):
                    await self.producer.stop()
            if self.tracing is not None:
                # Last: the spans of the work that just finished; the export of what is
                # queued is bounded (a thread, off the event loop).
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.tracing.stop)

    async def ready(self) -> tuple[bool, str]:
        """Broker reachable and registry view caught up."""
        if not self._started or self._registry is None or not self._registry.caught_up:
            return False, "starting"
        try:
            async with asyncio.timeout(2):
                await self.registry.sync()
        except Exception as exc:
            return False, f"broker unreachable: {exc.__class__.__name__}"
        return True, "ok"

