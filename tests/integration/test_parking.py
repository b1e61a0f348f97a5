"""Retries that outlast outages: parked lanes, circuits, auto-disable, the attempt log.

Real broker, real HTTP endpoint on 127.0.0.1, schedules compressed from hours to
fractions of a second (`retry_schedule`), parking after a short in-memory stage
(`retry_inline_max_s`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from switchboard.brokers import free_port
from switchboard.kafka import ACTIVITIES, ATTEMPTS, DELIVERIES, PARKED
from switchboard.model import Activity, AttemptRecord, StatusId
from switchboard.settings import env_names
from tests.integration.test_deliverer import Endpoint, Harness, Hit, _tag, harness, until

pytestmark = pytest.mark.timeout(120)

SWITCHBOARD = Path(sys.executable).with_name("switchboard")
# Attempt at once, again after 50 ms (in memory), then parked for 0.6 s, 0.8 s, ...
PARKING = {"retry_schedule": "0,0.05,0.6,0.8,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
           "retry_inline_max_s": 0.3, "circuit_failures": 1000}


@pytest.fixture(scope="module")
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = await Endpoint().start()
    try:
        yield ep
    finally:
        await ep.stop()


class Switch:
    """An endpoint path that answers 503 until turned on."""

    def __init__(self) -> None:
        self.on = False

    def __call__(self, n: int, body: bytes) -> tuple[int, dict[str, str], float]:
        return (200, {}, 0.0) if self.on else (503, {}, 0.0)


def first_ok_texts(hits: list[Hit], conversation: str) -> list[str]:
    """Texts of a conversation in the order they first arrived (a redelivery after a crash
    is allowed: it carries the same webhook-id)."""
    first: dict[str, str] = {}
    for x in hits:
        if x.status < 300 and x.json["conversationId"] == conversation:
            first.setdefault(x.headers["webhook-id"], x.text)
    return list(first.values())


async def read_topic(h: Harness, name: str, until_done: Any, timeout: float = 20.0
                     ) -> list[bytes]:
    """Every value of topic `name` (all partitions) until `until_done(values)` is true."""
    consumer = AIOKafkaConsumer(bootstrap_servers=h.settings.kafka_bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        topic = h.settings.topic(name)
        # Every topic read here has the hub's `partitions` partitions.
        tps = [TopicPartition(topic, p) for p in range(h.settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(timeout):
            while not until_done(values):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    values.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return values


async def test_an_outage_parks_lanes_and_loses_nothing(broker: Any, endpoint: Endpoint) -> None:
    t = _tag()
    down, fine = f"/{t}/down", f"/{t}/fine"
    switch = Switch()
    endpoint.behaviour[down] = switch
    async with harness(broker, endpoint, **PARKING) as h:
        dest = await h.integration("down", path=down)
        other = await h.integration("fine", path=fine)
        d = await h.deliverer()
        sent = {c: [h.delivery(dest, c, f"{c}-{i}") for i in range(4)] for c in ("a", "b")}
        first = [sent["a"][0], sent["b"][0]]
        await h.produce(first, partition=0)
        # Both heads fail twice in memory, then park; then the rest of each lane arrives
        # and must wait behind its parked head, on Kafka.
        await until(lambda: d.parked, 10, expect=2)
        rest = [x for c in ("a", "b") for x in sent[c][1:]]
        await h.produce([*rest, h.delivery(other, "z", "other-0")], partition=0)
        await endpoint.wait_for(fine, 1)
        await until(lambda: d.parked, 10, expect=8)
        # The main partition's commit point moved past every parked record: nothing of
        # it waits in memory, and the healthy destination was not held up. (A send may
        # be on the wire: a parked head's retry, due every second.)
        await until(lambda: h.committed(0), 10, expect={0: 9})
        assert all(x.status == 503 for x in endpoint.at(down))

        switch.on = True
        hits = await endpoint.wait_for(down, 8, timeout=30)
        for c in ("a", "b"):
            assert first_ok_texts(hits, c) == [f"{c}-{i}" for i in range(4)]
        # Retries carried the original webhook-id; nothing was delivered twice.
        ids = {x.delivery_id for c in sent.values() for x in c}
        assert {x.headers["webhook-id"] for x in hits} == ids
        assert len([x for x in hits if x.status < 300]) == 8
        await until(lambda: d.parked, 10, expect=0)
        assert d.stats.dead_lettered == 0


def _serve_env(h: Harness) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    for field, (name, _default) in env_names().items():
        value = getattr(h.settings, field)
        env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


async def test_parked_lanes_survive_kill_9(broker: Any, endpoint: Endpoint) -> None:
    """A deliverer killed while its lanes are parked: the next owner folds the parked
    partition back and delivers everything, in order."""
    t = _tag()
    down = f"/{t}/down"
    switch = Switch()
    endpoint.behaviour[down] = switch
    session_ms = 3000 if broker.kind == "tansu" else 6000
    async with harness(broker, endpoint, session_timeout_ms=session_ms, **PARKING) as h:
        dest = await h.integration("down", path=down)
        proc = subprocess.Popen(  # noqa: ASYNC220 - a child we kill; no waiting on it here
            [str(SWITCHBOARD), "serve", "deliverer", "--host", "127.0.0.1",
             "--port", str(free_port())], env=_serve_env(h),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sent = [h.delivery(dest, "k", f"k-{i}") for i in range(5)]
            await h.produce(sent[:1], partition=0)
            await endpoint.wait_for(down, 2, ok_only=False, timeout=40)  # joined, failing
            await h.produce(sent[1:], partition=0)

            async def parked_records() -> int:
                values = await read_topic(h, PARKED, lambda v: len(v) >= 5, timeout=20)
                return len(values)

            assert await parked_records() >= 5
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        switch.on = True
        await h.deliverer()
        await until(lambda: len(first_ok_texts(endpoint.at(down), "k")), 40, expect=5)
        hits = endpoint.at(down)
        assert first_ok_texts(hits, "k") == [f"k-{i}" for i in range(5)]
        assert {x.headers["webhook-id"] for x in hits} == {x.delivery_id for x in sent}


async def test_a_circuit_opens_then_one_probe_closes_it(broker: Any, endpoint: Endpoint
                                                        ) -> None:
    t = _tag()
    down = f"/{t}/down"
    switch = Switch()
    endpoint.behaviour[down] = switch
    async with harness(broker, endpoint, retry_schedule="0" + ",0.05" * 200,
                       circuit_failures=3, circuit_cooldown_s=0.4) as h:
        dest = await h.integration("down", path=down)
        d = await h.deliverer()
        await h.produce([h.delivery(dest, f"c{i}", f"c{i}") for i in range(6)], partition=0)
        await until(lambda: dest.integration_id in d.attempter.circuits
                    and d.attempter.circuits[dest.integration_id].is_open, 10)
        # While open, deliveries wait without spending attempts: over the next probes the
        # endpoint sees one request at a time, far fewer than six lanes retrying every
        # 50 ms would send.
        before = len(endpoint.at(down))
        probes_seen = await endpoint.wait_for(down, before + 2, ok_only=False, timeout=10)
        assert endpoint.max_active[down] <= 6
        assert len(probes_seen) - before == 2
        assert d.stats.held > 0
        switch.on = True
        hits = await endpoint.wait_for(down, 6, timeout=20)
        assert sorted(x.text for x in hits if x.status < 300) == [f"c{i}" for i in range(6)]
        failed = [x for x in endpoint.at(down) if x.status >= 500]
        # Six first attempts, then probes only: nothing like 6 lanes x 20 tries/s.
        assert len(failed) < 20
        await until(lambda: dest.integration_id in d.attempter.circuits
                    and d.attempter.circuits[dest.integration_id].is_open, 1, expect=False)


async def test_failing_too_long_disables_and_holds_until_re_enabled(
        broker: Any, endpoint: Endpoint) -> None:
    t = _tag()
    down = f"/{t}/down"
    switch = Switch()
    endpoint.behaviour[down] = switch
    async with harness(broker, endpoint, retry_schedule="0" + ",0.1" * 100,
                       disable_after_s=0.5, circuit_failures=1000) as h:
        dest = await h.integration("down", path=down)
        d = await h.deliverer()
        sent = [h.delivery(dest, "c", f"m-{i}") for i in range(3)]
        await h.produce(sent, partition=0)

        async def status() -> int:
            view = await h.runtime.registry.sync()
            return view.integrations[dest.integration_id].status_id

        await until(status, 10, expect=StatusId.PAUSED)
        events = await read_topic(h, ACTIVITIES, lambda v: any(
            b"event:integration_disabled" in x for x in v))
        (event,) = [msgspec.json.decode(x, type=Activity) for x in events
                    if b"event:integration_disabled" in x]
        assert event.event is not None
        assert event.event.data["integrationId"] == dest.integration_id
        # Held, not dropped: no dead letters while disabled.
        assert d.stats.dead_lettered == 0
        switch.on = True
        current = (await h.runtime.registry.sync()).integrations[dest.integration_id]
        assert (await h.runtime.registry.put(msgspec.structs.replace(
            current, status_id=int(StatusId.ACTIVE), version=current.version + 1))).accepted
        hits = await endpoint.wait_for(down, 3, timeout=20)
        assert first_ok_texts(hits, "c") == ["m-0", "m-1", "m-2"]


async def test_every_attempt_is_logged(broker: Any, endpoint: Endpoint) -> None:
    t = _tag()
    flaky = f"/{t}/flaky"
    endpoint.behaviour[flaky] = lambda n, body: (502, {}, 0.0) if n == 0 else (200, {}, 0.0)
    async with harness(broker, endpoint) as h:
        dest = await h.integration("flaky", path=flaky)
        await h.deliverer()
        delivery = h.delivery(dest, "c", "logged")
        (offset,) = await h.produce([delivery], partition=1)
        await endpoint.wait_for(flaky, 1)

        def mine(values: list[bytes]) -> list[AttemptRecord]:
            return [r for r in (msgspec.json.decode(v, type=AttemptRecord) for v in values)
                    if r.delivery_id == delivery.delivery_id]

        values = await read_topic(h, ATTEMPTS, lambda v: len(mine(v)) >= 2)
        first, second = sorted(mine(values), key=lambda r: r.attempt)
        assert (first.attempt, first.status, first.code) == (1, "pending", 502)
        assert first.error == "http_502" and first.next_at is not None
        assert (second.attempt, second.status, second.code) == (2, "delivered", 200)
        assert second.error is None and second.latency_ms is not None
        for r in (first, second):
            assert r.source is not None
            assert (r.source.partition, r.source.offset) == (1, offset)
            assert (r.hub_id, r.destination_id, r.activity_id) == (
                h.hub_id, dest.integration_id, delivery.activity.activity_id)


async def test_a_name_resolving_to_loopback_is_refused_at_send(broker: Any, endpoint: Endpoint
                                                               ) -> None:
    """SSRF: checked on the address actually connected to, not on the URL's text."""
    async with harness(broker, endpoint, allow_private_destinations=False) as h:
        dest = await h.integration("local", path=None)
        dest = msgspec.structs.replace(
            dest, version=dest.version + 1,
            configuration=msgspec.structs.replace(
                dest.configuration, webhook_url=f"http://localhost:{endpoint.port}/{_tag()}"))
        assert (await h.runtime.registry.put(dest)).accepted
        await h.deliverer()
        delivery = h.delivery(dest, "c", "nope")
        before = len(endpoint.hits)
        await h.produce([delivery])
        (dead,) = await h.dead_letters(1)
        assert (dead.reason, dead.attempts) == ("destination_forbidden", 1)
        assert len(endpoint.hits) == before  # nothing reached the loopback receiver
        # The failure event names the reason only (no address, no answer).
        events = await read_topic(h, ACTIVITIES, lambda v: any(
            b"event:delivery_failed" in x for x in v))
        (event,) = [msgspec.json.decode(x, type=Activity) for x in events
                    if b"event:delivery_failed" in x]
        assert event.event is not None
        assert set(event.event.data) == {"deliveryId", "destinationId", "reason", "attempts",
                                         "status"}
        assert event.event.data["reason"] == "destination_forbidden"
        assert event.channel_id == "Direct"


async def test_an_integration_caps_its_own_rate(broker: Any, endpoint: Endpoint) -> None:
    t = _tag()
    capped = f"/{t}/capped"
    async with harness(broker, endpoint) as h:
        dest = await h.integration("capped", path=capped)
        dest = msgspec.structs.replace(
            dest, version=dest.version + 1, configuration=msgspec.structs.replace(
                dest.configuration, max_deliveries_per_second=5.0))
        assert (await h.runtime.registry.put(dest)).accepted
        await h.deliverer()
        # Ten conversations, so nothing but the cap orders them in time.
        await h.produce([h.delivery(dest, f"c{i}", f"m-{i}") for i in range(10)])
        hits = await endpoint.wait_for(capped, 10)
        starts = sorted(x.started for x in hits)
        # A burst of 5 (one second's worth), then 5 a second: the last five take >= 0.8 s.
        assert starts[-1] - starts[0] >= 0.8


@pytest.mark.kafka_only
@pytest.mark.timeout(240)
async def test_a_kafka_restart_mid_stream_loses_nothing(tmp_path: Path, endpoint: Endpoint
                                                        ) -> None:
    """Apache Kafka restarted while lanes are parked and deliveries are in flight."""
    from switchboard.brokers.kafka import KafkaBroker

    broker = KafkaBroker.start(tmp_path / "kafka")
    t = _tag()
    down = f"/{t}/down"
    switch = Switch()
    endpoint.behaviour[down] = switch
    try:
        async with harness(broker, endpoint, **PARKING) as h:
            dest = await h.integration("down", path=down)
            d = await h.deliverer()
            before = [h.delivery(dest, c, f"{c}-{i}") for c in "ab" for i in range(3)]
            await h.produce(before)
            await until(lambda: d.parked, 20, expect=6)

            await asyncio.to_thread(broker.restart)

            after = [h.delivery(dest, c, f"{c}-{i}") for c in "ab" for i in range(3, 6)]
            await h.produce(after)
            switch.on = True
            await until(lambda: sum(len(first_ok_texts(endpoint.at(down), c)) for c in "ab"),
                        90, expect=12)
            for c in "ab":
                assert first_ok_texts(endpoint.at(down), c) == [f"{c}-{i}" for i in range(6)]
    finally:
        broker.stop()


async def test_a_hub_schedule_overrides_the_deployment_one(broker: Any, endpoint: Endpoint
                                                           ) -> None:
    t = _tag()
    fail = f"/{t}/fail"
    endpoint.behaviour[fail] = lambda n, body: (503, {}, 0.0)
    async with harness(broker, endpoint) as h:  # the deployment: four attempts
        hub = (await h.runtime.registry.sync()).hubs[h.hub_id]
        assert (await h.runtime.registry.put(
            msgspec.structs.replace(hub, retry_schedule="0,0.01", version=hub.version + 1)
        )).accepted
        dest = await h.integration("fail", path=fail)
        await h.deliverer()
        await h.produce([h.delivery(dest, "c", "twice")])
        (dead,) = await h.dead_letters(1)
        assert (dead.reason, dead.attempts) == ("retries_exhausted", 2)
        assert len(endpoint.at(fail)) == 2


async def test_one_slow_backlog_does_not_stop_its_partition(broker: Any, endpoint: Endpoint
                                                            ) -> None:
    """Past the memory bound, the backlog of the busiest destination moves to the parked
    topic instead of pausing the partition for everyone on it."""
    t = _tag()
    slow, fast = f"/{t}/slow", f"/{t}/fast"
    endpoint.behaviour[slow] = lambda n, body: (200, {}, 0.2)
    async with harness(broker, endpoint, max_pending_per_partition=10) as h:
        slow_dest = await h.integration("slow", path=slow)
        fast_dest = await h.integration("fast", path=fast)
        d = await h.deliverer()
        tp = TopicPartition(h.settings.topic(DELIVERIES), 0)
        backlog = [h.delivery(slow_dest, "s", f"s-{i}") for i in range(30)]
        await h.produce(backlog, partition=0)
        await until(lambda: d.stats.overflowed > 0, 10)
        quick = [h.delivery(fast_dest, f"f{i}", f"f-{i}") for i in range(5)]
        await h.produce(quick, partition=0)
        fast_hits = await endpoint.wait_for(fast, 5)
        slow_hits = endpoint.at(slow)
        # The fast destination was served long before the slow backlog was through.
        assert len(slow_hits) < 30
        assert max(x.finished for x in fast_hits) < max(
            x.finished for x in await endpoint.wait_for(slow, 30, timeout=30))
        assert tp not in d.paused
        assert first_ok_texts(endpoint.at(slow), "s") == [f"s-{i}" for i in range(30)]
        await until(lambda: d.parked, 10, expect=0)


async def test_hanging_destinations_do_not_take_every_slot(broker: Any, endpoint: Endpoint
                                                           ) -> None:
    """Ten endpoints that never answer, three lanes each, and sixteen slots in all:
    the healthy destination is served before a single hanging attempt has ended."""
    t = _tag()
    healthy = f"/{t}/healthy"
    async with harness(broker, endpoint, max_in_flight=16, delivery_timeout_s=3.0) as h:
        hanging = []
        for i in range(10):
            path = f"/{t}/hang{i}"
            endpoint.behaviour[path] = lambda n, body: (200, {}, 4.0)
            hanging.append(await h.integration(f"hang{i}", path=path))
        ok_dest = await h.integration("healthy", path=healthy)
        d = await h.deliverer()
        # The hanging destinations' records come first on the partition.
        await h.produce([h.delivery(x, f"c{j}", f"h-{j}") for x in hanging for j in range(3)]
                        + [h.delivery(ok_dest, f"k{j}", f"ok-{j}") for j in range(6)],
                        partition=0)
        await endpoint.wait_for(healthy, 6)
        # No hanging attempt has ended yet (each would have counted a retry or a timeout).
        assert d.stats.retries == 0 and d.stats.dead_lettered == 0
        assert d.in_flight <= 16
