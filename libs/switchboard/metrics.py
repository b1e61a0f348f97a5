"""Prometheus metrics of one process, served at ``GET /metrics`` by every service.

One `Metrics` per Runtime, each with its own registry, so two hubs in one test process
never mix their counts. Counters and histograms are updated where things happen; values
that already live in the services (consumer lag, parked lanes, open circuits) are read
only when Prometheus scrapes, through `Metrics.observe`, so the hot path pays nothing
for them.

Label values come from small fixed sets (channel names, HTTP statuses, our own error and
outcome codes), except the hub: `HubLabels` gives the first `max_hubs` hubs seen their
own label and every later one ``"other"``, so a deployment with thousands of tenants
cannot grow the series without bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "OTHER_HUB", "HubLabels", "Metrics", "Sample"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER_HUB = "other"

# Seconds; from a loopback hop to a slow provider's timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)

# (label values, value) of one gauge sample, produced when Prometheus scrapes.
Sample = tuple[tuple[str, ...], float]
Source = Callable[[], Iterable[Sample]]


class HubLabels:
    """The hub label of a hub id: its id for the first `max_hubs` hubs, else "other"."""

    __slots__ = ("_max", "_seen")

    def __init__(self, max_hubs: int) -> None:
        self._max = max(0, max_hubs)
        self._seen: set[str] = set()

    def __call__(self, hub_id: str) -> str:
        if hub_id in self._seen:
            return hub_id
        if len(self._seen) < self._max:
            self._seen.add(hub_id)
            return hub_id
        return OTHER_HUB


class _Live(Collector):
    """Gauges computed at scrape time from callbacks the services register."""

    def __init__(self) -> None:
        self._sources: dict[str, tuple[str, tuple[str, ...], list[Source]]] = {}

    def add(self, name: str, documentation: str, labels: tuple[str, ...],
            source: Source) -> None:
        entry = self._sources.setdefault(name, (documentation, labels, []))
        if entry[1] != labels:
            raise ValueError(f"{name}: labels {labels} differ from {entry[1]}")
        entry[2].append(source)

    def remove(self, source: Source) -> None:
        for _doc, _labels, sources in self._sources.values():
            if source in sources:
                sources.remove(source)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the set of live gauges changes as services start

    def collect(self) -> Iterator[Metric]:
        for name, (doc, labels, sources) in self._sources.items():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for source in list(sources):
                for values, value in source():
                    family.add_metric(list(values), value)
            yield family


class Metrics:
    """Every metric of the hub, registered on a registry of its own."""

    def __init__(self, max_hub_labels: int = 100) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.hub = HubLabels(max_hub_labels)
        self.ingress_requests = Counter(
            "switchboard_ingress_requests", "Webhooks received at /ingress, by channel and "
            "HTTP status answered.", ["channel", "status"], registry=r)
        self.signature_failures = Counter(
            "switchboard_signature_failures", "Ingress requests refused before they were "
            "authenticated, by the reason (answered as one 401).", ["reason"], registry=r)
        self.produce_seconds = Histogram(
            "switchboard_produce_seconds", "Time from an accepted webhook to its activity "
            "being durable on Kafka (acks=all).", buckets=LATENCY_BUCKETS, registry=r)
        self.activities_in = Counter(
            "switchboard_activities", "Activities made durable by this process, by hub.",
            ["hub"], registry=r)
        self.deliveries = Counter(
            "switchboard_deliveries", "Deliveries that reached a final state or were "
            "parked, by hub and outcome (delivered, failed, parked).", ["hub", "outcome"],
            registry=r)
        self.attempt_seconds = Histogram(
            "switchboard_delivery_attempt_seconds", "Duration of each delivery attempt, by "
            "outcome (delivered, retry, permanent).", ["outcome"], buckets=LATENCY_BUCKETS,
            registry=r)
        self.dead_letters = Counter(
            "switchboard_dead_letters", "Deliveries written to deliveries.dead, by reason.",
            ["reason"], registry=r)
        self.rate_limited = Counter(
            "switchboard_rate_limit_refusals", "Requests refused with 429, by which limit "
            "(integration, hub, address, api).", ["limit"], registry=r)
        self._live = _Live()
        self._refresh: list[Callable[[], Awaitable[None]]] = []
        r.register(self._live)

    def observe(self, name: str, documentation: str, labels: tuple[str, ...],
                source: Callable[[], Iterable[Sample]]) -> Callable[[], None]:
        """Serve gauge `name` from `source`, called at each scrape; returns the function
        that stops it (a service that stops must not be asked any more)."""
        self._live.add(name, documentation, labels, source)
        return lambda: self._live.remove(source)

    def observe_async(self, name: str, documentation: str, labels: tuple[str, ...],
                      source: Callable[[], Awaitable[list[Sample]]]) -> Callable[[], None]:
        """Like `observe`, for a source that must await (e.g. a consumer's positions):
        `refresh` awaits it before each scrape."""
        latest: list[Sample] = []

        async def update() -> None:
            latest[:] = await source()

        def read() -> Iterable[Sample]:
            return list(latest)

        self._refresh.append(update)
        self._live.add(name, documentation, labels, read)

        def stop() -> None:
            self._live.remove(read)
            if update in self._refresh:
                self._refresh.remove(update)
        return stop

    async def refresh(self) -> None:
        """Bring the awaited sources up to date (called by the /metrics endpoint)."""
        for update in list(self._refresh):
            await update()

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format."""
        return generate_latest(self.registry)
