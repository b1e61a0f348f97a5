"""Metric labels stay bounded; JSON log lines carry the ids of their own task only."""

from __future__ import annotations

import asyncio
import logging

import orjson
from prometheus_client.parser import text_string_to_metric_families

from switchboard.logfmt import LOG_CONTEXT, JsonFormatter
from switchboard.metrics import OTHER_HUB, HubLabels, Metrics


def test_hub_labels_are_capped() -> None:
    labels = HubLabels(2)
    assert [labels(h) for h in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER_HUB, "a",
                                                                    OTHER_HUB, "b"]
    assert HubLabels(0)("a") == OTHER_HUB


def test_thousands_of_hubs_make_a_bounded_number_of_series() -> None:
    m = Metrics(max_hub_labels=10)
    for i in range(5000):
        m.activities_in.labels(m.hub(f"hub-{i}")).inc()
    (family,) = [f for f in text_string_to_metric_families(m.exposition().decode())
                 if f.name == "switchboard_activities"]
    totals = {s.labels["hub"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert len(totals) == 11 and totals[OTHER_HUB] == 4990


def test_live_gauges_are_read_at_scrape_time_and_can_stop() -> None:
    m = Metrics()
    held = [3.0]
    stop = m.observe("switchboard_parked_deliveries", "doc", (), lambda: [((), held[0])])
    held[0] = 7.0
    assert "switchboard_parked_deliveries 7.0" in m.exposition().decode()
    stop()
    assert "switchboard_parked_deliveries 7.0" not in m.exposition().decode()


async def test_async_sources_are_refreshed_before_a_scrape() -> None:
    m = Metrics()

    async def lag() -> list[tuple[tuple[str, ...], float]]:
        return [(("g", "t", "0"), 5.0)]

    m.observe_async("switchboard_consumer_lag", "doc", ("group", "topic", "partition"), lag)
    assert 'partition="0"' not in m.exposition().decode()
    await m.refresh()
    assert 'switchboard_consumer_lag{group="g",partition="0",topic="t"} 5.0' \
        in m.exposition().decode()


async def test_json_lines_carry_their_own_tasks_ids() -> None:
    formatter = JsonFormatter("deliverer")
    lines: list[dict[str, object]] = []

    async def lane(delivery: str) -> None:
        LOG_CONTEXT.set({"hubId": "h", "deliveryId": delivery})
        await asyncio.sleep(0)
        record = logging.LogRecord("switchboard", logging.WARNING, __file__, 1,
                                   "attempt %d failed", (2,), None)
        lines.append(orjson.loads(formatter.format(record)))

    await asyncio.gather(lane("d1"), lane("d2"))
    assert sorted(str(line["deliveryId"]) for line in lines) == ["d1", "d2"]
    assert all(line["service"] == "deliverer" and line["message"] == "attempt 2 failed"
               and line["level"] == "WARNING" for line in lines)
    assert "deliveryId" not in LOG_CONTEXT.get()  # nothing leaked into this task
