"""The deliverer against a real broker and a real HTTP endpoint on loopback.

Deliveries are produced straight to the `deliveries` topic (no router) and received by a
small starlette app on uvicorn that records every attempt, with timings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import inspect
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.brokers import free_port
from switchboard.channels import DirectConfig, SystemConfig, TwilioSmsConfig
from switchboard.ids import delivery_id as make_delivery_id
from switchboard.kafka import DEAD, DELIVERIES
from switchboard.keys import SigningKeyPair, generate_signing_keypair
from switchboard.model import (
    Activity,
    ChannelId,
    DeadLetter,
    Delivery,
    IntegrationType,
    StatusId,
    TextMessage,
)
from switchboard.model import Sender as Who
from switchboard.registry import HubRecord, IntegrationRecord, KeySet
from switchboard.sealing import new_keyset, seal_config
from switchboard.services.deliverer import GROUP, Deliverer
from switchboard.services.runtime import Runtime
from tests.conftest import make_settings
from tests.support import LoopbackServer

pytestmark = pytest.mark.timeout(60)

_json = msgspec.json.Encoder()
Reply = tuple[int, dict[str, str], float]  # status, headers, delay before answering
Behaviour = Callable[[int, bytes], Reply]  # (n-th request to the path, body) → reply


def ok(n: int, body: bytes) -> Reply:
    return 200, {}, 0.0


@dataclasses.dataclass
class Hit:
    path: str
    n: int
    headers: dict[str, str]
    body: bytes
    status: int
    started: float
    finished: float

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def text(self) -> str:
        message = self.json.get("activity") or self.json["activities"][0]
        return str(message["message"]["text"])


class Endpoint:
    """A recording webhook receiver on 127.0.0.1; each path behaves as told."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.behaviour: dict[str, Behaviour] = {}
        self.hits: list[Hit] = []
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.peak_total = 0
        self._count: Counter[str] = Counter()
        self._changed = asyncio.Condition()
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self._http = LoopbackServer(app, self.port)

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        started = time.monotonic()
        body = await request.body()
        n = self._count[path]
        self._count[path] += 1
        self.active[path] += 1
        self.max_active[path] = max(self.max_active[path], self.active[path])
        self.peak_total = max(self.peak_total, sum(self.active.values()))
        try:
            status, headers, delay = self.behaviour.get(path, ok)(n, body)
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.active[path] -= 1
        async with self._changed:
            self.hits.append(Hit(path, n, dict(request.headers), body, status, started,
                                 time.monotonic()))
            self._changed.notify_all()
        return Response(status_code=status, headers=headers)

    def at(self, path: str, *, ok_only: bool = False) -> list[Hit]:
        return [h for h in self.hits if h.path == path and (not ok_only or h.status < 300)]

    async def wait_for(self, path: str, count: int, *, ok_only: bool = True,
                       timeout: float = 20.0) -> list[Hit]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.at(path, ok_only=ok_only)) >= count)
        return self.at(path, ok_only=ok_only)

    async def start(self) -> Endpoint:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()


@pytest.fixture(scope="module")
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = await Endpoint().start()
    try:
        yield ep
    finally:
        await ep.stop()


async def until(probe: Callable[[], Any], timeout: float, *, expect: Any = True) -> None:
    """Poll `probe` (sync or async) until it returns `expect`; state lives in the broker."""
    async with asyncio.timeout(timeout):
        while True:
            got = probe()
            if inspect.isawaitable(got):
                got = await got
            if got == expect:
                return
            await asyncio.sleep(0.05)


async def _until_text(endpoint: Endpoint, path: str, text: str, timeout: float = 20.0
                      ) -> None:
    """Wait until `path` got (2xx) a delivery of the message `text`."""
    async with asyncio.timeout(timeout), endpoint._changed:
        await endpoint._changed.wait_for(
            lambda: any(x.text == text for x in endpoint.at(path, ok_only=True)))


def verifies(public_key: str, hit: Hit) -> int:
    """How many `v1a` entries of the hit verify under `public_key` (cryptography's Ed25519)."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    h = hit.headers
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + hit.body
    good = 0
    for entry in h["webhook-signature"].split():
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), signed)
        except InvalidSignature:
            continue
        good += 1
    return good


class Harness:
    """One test's hub: its own topics and group, a Runtime, a hub record, deliverers."""

    def __init__(self, runtime: Runtime, endpoint: Endpoint) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.endpoint = endpoint
        self.hub_id = f"hub-{uuid.uuid4().hex[:8]}"
        self.deliverers: list[Deliverer] = []
        self.now_ms = int(time.time() * 1000)
        self.publics: dict[str, list[str]] = {}
        self._seq = 0

    def keyset(self, *, retired_ago_ms: int | None = None) -> tuple[KeySet, str]:
        pair = generate_signing_keypair()
        ks = KeySet(
            created_at=self.now_ms - 10_000_000,
            outbound_public=pair.public,
            # Plain until `integration` seals it, bound to the integration's id.
            outbound_secret_sealed=pair.secret,
            inbound_public=generate_signing_keypair().public,
            retired_at=None if retired_ago_ms is None else self.now_ms - retired_ago_ms,
        )
        return ks, pair.public

    async def integration(self, name: str, *, channel: ChannelId = ChannelId.DIRECT,
                          path: str | None = None, keys: list[KeySet] | None = None
                          ) -> IntegrationRecord:
        url = self.endpoint.url + path if path else None
        config: Any
        itype = IntegrationType.AGENT
        if channel is ChannelId.SYSTEM:
            assert url is not None
            config, itype = SystemConfig(webhook_url=url, events=["message:*"]), \
                IntegrationType.SYSTEM
        elif channel is ChannelId.TWILIO_SMS:
            config, itype = TwilioSmsConfig(
                account_sid="AC1", auth_token="token",
                number_sid="PN1"), IntegrationType.CUSTOMER
        else:
            config = DirectConfig(integration_type=IntegrationType.AGENT, webhook_url=url)
        if keys is None:
            ks, public = self.keyset()
            keys = [ks]
            self.publics[name] = [public]
        iid = f"{name}-{uuid.uuid4().hex[:8]}"
        sealer = self.runtime.sealer
        keys = [msgspec.structs.replace(new_keyset(
            sealer, iid, SigningKeyPair(k.outbound_public, k.outbound_secret_sealed),
            k.inbound_public, None, k.created_at), retired_at=k.retired_at) for k in keys]
        rec = IntegrationRecord(
            integration_id=iid, hub_id=self.hub_id,
            channel_id=channel, integration_type=itype, name=name,
            status_id=StatusId.ACTIVE, configuration=seal_config(sealer, iid, config), version=1,
            created_at=self.now_ms, updated_at=self.now_ms, keys=keys)
        outcome = await self.runtime.registry.put(rec)
        assert outcome.accepted, outcome
        return rec

    def delivery(self, dest: IntegrationRecord, conversation: str, text: str) -> Delivery:
        self._seq += 1
        activity = Activity(
            activity_id=f"act-{uuid.uuid4().hex}", hub_id=self.hub_id, integration_id="src",
            channel_id="Direct", type="message:customer", conversation_id=conversation,
            sender=Who(id="cust-1"), timestamp=self.now_ms, message=TextMessage(text=text))
        return Delivery(
            delivery_id=make_delivery_id(activity.activity_id, dest.integration_id),
            hub_id=self.hub_id, destination_id=dest.integration_id,
            conversation_id=conversation, activity=activity, created_at=self.now_ms)

    async def produce(self, deliveries: list[Delivery], *, partition: int | None = None
                      ) -> list[int]:
        """Write in order; returns the offsets."""
        topic = self.settings.topic(DELIVERIES)
        # One batch: aiokafka keeps the order within a partition.
        futures = [
            await self.runtime.producer.send(
                topic, _json.encode(d), key=d.destination_id.encode(), partition=partition)
            for d in deliveries
        ]
        return [md.offset for md in await asyncio.gather(*futures)]

    async def deliverer(self) -> Deliverer:
        """A started deliverer that owns its partitions (the first join takes seconds)."""
        d = Deliverer(self.runtime)
        self.deliverers.append(d)
        await d.start()
        await until(lambda: bool(d.assignment), 20)
        return d

    async def committed(self, *partitions: int) -> dict[int, int]:
        """The group's committed offsets (-1: none), asked without joining the group."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            topic = self.settings.topic(DELIVERIES)
            got = await admin.list_consumer_group_offsets(
                self.settings.topic_prefix + GROUP,
                partitions=[TopicPartition(topic, p) for p in partitions])
        finally:
            await admin.close()
        return {tp.partition: om.offset for tp, om in got.items()}

    async def dead_letters(self, count: int, timeout: float = 20.0) -> list[DeadLetter]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=None,
            auto_offset_reset="earliest")
        await consumer.start()
        out: list[DeadLetter] = []
        try:
            tp = TopicPartition(self.settings.topic(DEAD), 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            async with asyncio.timeout(timeout):
                while len(out) < count:
                    batch = await consumer.getmany(tp, timeout_ms=200)
                    for rec in batch.get(tp, []):
                        out.append(msgspec.json.decode(rec.value, type=DeadLetter))
                        assert rec.key is not None
                        assert rec.key.decode() == out[-1].delivery.destination_id
        finally:
            await consumer.stop()
        return out


@contextlib.asynccontextmanager
async def harness(broker: Any, endpoint: Endpoint, **overrides: Any) -> AsyncIterator[Harness]:
    runtime = Runtime(make_settings(broker, **overrides))
    await runtime.start()
    h = Harness(runtime, endpoint)
    try:
        hub = HubRecord(hub_id=h.hub_id, name="acme", token_hash=uuid.uuid4().hex,
                        created_at=h.now_ms)
        assert (await runtime.registry.put(hub)).accepted
        yield h
    finally:
        for d in h.deliverers:
            await d.stop()
        await runtime.stop()


def _tag() -> str:
    return uuid.uuid4().hex[:8]


# ---------------------------------------------------------------------------------------


async def test_signed_ordered_and_retried(broker: Any, endpoint: Endpoint) -> None:
    """Signatures verify; order per (destination, conversation) holds across retries."""
    t = _tag()
    flaky, other, system, rotating, expired, ws = (
        f"/{t}/flaky", f"/{t}/other", f"/{t}/system", f"/{t}/rotating", f"/{t}/expired", None)

    first_tries: list[int] = []

    def flaky_reply(n: int, body: bytes) -> Reply:
        # c1's first message: 500, then 500 asking for a second's pause, then fine.
        if b'"text":"c1-0"' not in body:
            return ok(n, body)
        first_tries.append(n)
        replies: list[Reply] = [(500, {}, 0.0), (500, {"Retry-After": "1"}, 0.0)]
        return replies[len(first_tries) - 1] if len(first_tries) <= 2 else ok(n, body)

    endpoint.behaviour[flaky] = flaky_reply
    # Retry-After is honoured up to the schedule's longest wait (2 s here).
    async with harness(broker, endpoint, retry_schedule="0,0.02,0.02,2,2") as h:
        dest = await h.integration("flaky", path=flaky)
        dest2 = await h.integration("other", path=other)
        sys_dest = await h.integration("audit", channel=ChannelId.SYSTEM, path=system)
        old, old_pub = h.keyset(retired_ago_ms=1_000)  # inside the grace window
        new, new_pub = h.keyset()
        rot = await h.integration("rotating", path=rotating, keys=[old, new])
        gone_key, gone_pub = h.keyset(retired_ago_ms=(h.settings.key_grace_s + 10) * 1000)
        new2, new2_pub = h.keyset()
        exp = await h.integration("expired", path=expired, keys=[gone_key, new2])
        websocket_only = await h.integration("ws", path=ws)
        await h.deliverer()

        c1 = [h.delivery(dest, "c1", f"c1-{i}") for i in range(5)]
        c2 = [h.delivery(dest, "c2", f"c2-{i}") for i in range(5)]
        # Interleaved on one partition, as the router would write them.
        await h.produce([d for pair in zip(c1, c2, strict=True) for d in pair], partition=0)
        await h.produce([h.delivery(dest2, "c1", "other-0"), h.delivery(sys_dest, "c1", "s-0"),
                         h.delivery(rot, "c1", "r-0"), h.delivery(exp, "c1", "e-0"),
                         h.delivery(websocket_only, "c1", "ws-0")], partition=1)

        await endpoint.wait_for(flaky, 10)
        attempts = endpoint.at(flaky)
        c1_seq = [x.text for x in attempts if x.text.startswith("c1")]
        c2_seq = [x.text for x in attempts if x.text.startswith("c2")]
        assert c1_seq == ["c1-0", "c1-0", "c1-0", "c1-1", "c1-2", "c1-3", "c1-4"]
        assert c2_seq == [f"c2-{i}" for i in range(5)]
        c1_tries = [x for x in attempts if x.text == "c1-0"]
        assert [x.status for x in c1_tries] == [500, 500, 200]
        # Our own wait is 20 ms; the second wait is the endpoint's Retry-After.
        gap1 = c1_tries[1].started - c1_tries[0].finished
        gap2 = c1_tries[2].started - c1_tries[1].finished
        print(f"\nretry gaps: {gap1 * 1000:.0f} ms, then {gap2 * 1000:.0f} ms (Retry-After: 1)")
        assert gap1 < 0.5
        assert 0.95 <= gap2 < 2.0
        # Another conversation of the same destination did not wait for c1's retries.
        assert max(x.finished for x in attempts if x.text.startswith("c2")) < c1_tries[2].started
        # Same webhook-id on every retry; a fresh timestamp and signature each time.
        assert {x.headers["webhook-id"] for x in c1_tries} == {c1[0].delivery_id}
        for x in attempts:
            assert verifies(h.publics["flaky"][0], x) == 1
            assert x.headers["content-type"] == "application/json"
            assert x.headers["user-agent"] == "Switchboard/0.1"
            assert abs(int(x.headers["webhook-timestamp"]) - time.time()) < 30
        body = attempts[-1].json
        assert body["hubId"] == h.hub_id
        assert body["integrationId"] == dest.integration_id
        assert body["activity"]["conversationId"] == body["conversationId"]

        (sys_hit,) = await endpoint.wait_for(system, 1)
        assert verifies(h.publics["audit"][0], sys_hit) == 1
        assert sys_hit.json["integrationId"] == sys_dest.integration_id
        assert [a["message"]["text"] for a in sys_hit.json["activities"]] == ["s-0"]

        # Key rotation: inside the grace window both keys sign, after it only the new one.
        (rot_hit,) = await endpoint.wait_for(rotating, 1)
        assert len(rot_hit.headers["webhook-signature"].split()) == 2
        assert verifies(old_pub, rot_hit) == 1
        assert verifies(new_pub, rot_hit) == 1
        (exp_hit,) = await endpoint.wait_for(expired, 1)
        assert len(exp_hit.headers["webhook-signature"].split()) == 1
        assert verifies(gone_pub, exp_hit) == 0
        assert verifies(new2_pub, exp_hit) == 1
        await endpoint.wait_for(other, 1)

        # Everything is final (the websocket-only one by doing nothing): all committed.
        await until(lambda: h.committed(0, 1), 10, expect={0: 10, 1: 5})
        stats = h.deliverers[0].stats
        assert stats.skipped == 1  # websocket-only
        assert stats.delivered == 14
        assert stats.dead_lettered == 0


async def test_slow_destination_does_not_delay_others(broker: Any, endpoint: Endpoint) -> None:
    t = _tag()
    slow, fast = f"/{t}/slow", f"/{t}/fast"
    endpoint.behaviour[slow] = lambda n, body: (200, {}, 1.5)
    async with harness(broker, endpoint, max_in_flight=4, max_in_flight_per_destination=2,
                       delivery_timeout_s=5.0) as h:
        slow_dest = await h.integration("slow", path=slow)
        fast_dest = await h.integration("fast", path=fast)
        await h.deliverer()
        # The slow destination's records come first, on the same partition, each its own
        # conversation: six lanes that all want a slot at once.
        begin = time.monotonic()
        await h.produce([h.delivery(slow_dest, f"s{i}", f"slow-{i}") for i in range(6)]
                        + [h.delivery(fast_dest, f"f{i % 5}", f"fast-{i}") for i in range(20)],
                        partition=0)
        fast_hits = await endpoint.wait_for(fast, 20)
        slow_hits = await endpoint.wait_for(slow, 6)
        fast_done = max(x.finished for x in fast_hits) - begin
        first_slow_done = min(x.finished for x in slow_hits) - begin
        all_slow_done = max(x.finished for x in slow_hits) - begin
        print(f"\nfast: 20 delivered by {fast_done * 1000:.0f} ms; slow: first done at "
              f"{first_slow_done * 1000:.0f} ms, all 6 at {all_slow_done * 1000:.0f} ms; "
              f"slow peak concurrency {endpoint.max_active[slow]}, total peak "
              f"{endpoint.peak_total}")
        assert fast_done < first_slow_done
        # The per-destination bound: never more than 2 of the slow one at a time, so its
        # six take three rounds; the global bound caps everything at 4.
        assert endpoint.max_active[slow] == 2
        assert endpoint.peak_total <= 4
        assert all_slow_done >= 3 * 1.5
        # Order per conversation of the fast destination.
        for conv in range(5):
            texts = [x.text for x in fast_hits if x.json["conversationId"] == f"f{conv}"]
            assert texts == [f"fast-{i}" for i in range(conv, 20, 5)]


async def test_failures_end_in_dead_letters(broker: Any, endpoint: Endpoint) -> None:
    t = _tag()
    fail, gone = f"/{t}/fail", f"/{t}/gone"
    endpoint.behaviour[fail] = lambda n, body: (503, {}, 0.0)
    endpoint.behaviour[gone] = lambda n, body: (410, {}, 0.0)
    async with harness(broker, endpoint, retry_schedule="0,0.02,0.02") as h:
        failing = await h.integration("fail", path=fail)
        gone_dest = await h.integration("gone", path=gone)
        sms = await h.integration("sms", channel=ChannelId.TWILIO_SMS)
        deleted = await h.integration("deleted", path=f"/{t}/deleted")
        await h.runtime.registry.delete_integration(deleted.integration_id)
        await h.deliverer()
        sent = [h.delivery(failing, "c", "f-0"), h.delivery(failing, "c", "f-1"),
                h.delivery(gone_dest, "c", "g-0"), h.delivery(sms, "c", "sms-0"),
                h.delivery(deleted, "c", "d-0")]
        await h.produce(sent)
        dead = {d.delivery.delivery_id: d for d in await h.dead_letters(5)}
        assert set(dead) == {d.delivery_id for d in sent}
        for d in sent[:2]:
            got = dead[d.delivery_id]
            assert (got.reason, got.attempts, got.last_status) == ("retries_exhausted", 3, 503)
            assert got.delivery == d
            assert got.dead_at > 0
        got = dead[sent[2].delivery_id]
        assert (got.reason, got.attempts, got.last_status) == ("gone", 1, 410)
        assert (dead[sent[3].delivery_id].reason, dead[sent[3].delivery_id].attempts) == (
            "unsupported_channel", 0)
        assert dead[sent[4].delivery_id].reason == "destination_deleted"
        # The lane went past its dead-lettered head only after its last attempt.
        tries = endpoint.at(fail)
        assert [x.text for x in tries] == ["f-0"] * 3 + ["f-1"] * 3
        assert len(endpoint.at(gone)) == 1


async def test_commit_never_passes_an_unfinished_record(broker: Any, endpoint: Endpoint
                                                        ) -> None:
    t = _tag()
    stuck, fine = f"/{t}/stuck", f"/{t}/fine"
    healthy = False
    endpoint.behaviour[stuck] = lambda n, body: (200, {}, 0.0) if healthy else (500, {}, 0.0)
    # A short session on Tansu: it numbers the first generation 0, for which aiokafka sends
    # no LeaveGroup on stop, so the restarted member waits out the old one's session.
    # (Kafka refuses sessions under its group.min.session.timeout.ms, 6 s.)
    session_ms = 3000 if broker.kind == "tansu" else 6000
    # Retried in memory all along (no parking, no circuit): the head stays unfinished.
    async with harness(broker, endpoint, retry_schedule="0" + ",0.05" * 1000,
                       circuit_failures=100_000, session_timeout_ms=session_ms) as h:
        stuck_dest = await h.integration("stuck", path=stuck)
        fine_dest = await h.integration("fine", path=fine)
        first = await h.deliverer()
        # Partition 0: an unfinished record, then two that finish behind it.
        head = h.delivery(stuck_dest, "c", "head")
        behind = [h.delivery(fine_dest, "c", f"behind-{i}") for i in range(2)]
        assert await h.produce([head, *behind], partition=0) == [0, 1, 2]
        # Partition 1: finishes on its own.
        assert await h.produce([h.delivery(fine_dest, "d", "elsewhere")], partition=1) == [0]
        await endpoint.wait_for(fine, 3)
        await endpoint.wait_for(stuck, 3, ok_only=False)
        await until(lambda: h.committed(1), 5, expect={1: 1})
        # Sentinel: one more record on partition 1, finished after everything above. A
        # commit that takes it in commits every partition's final records (one pass for
        # all), so partition 0 would be past its head by then if it ever could be.
        assert await h.produce([h.delivery(fine_dest, "d", "later")], partition=1) == [1]
        await _until_text(endpoint, fine, "later")
        await until(lambda: h.committed(1), 5, expect={1: 2})
        assert (await h.committed(0))[0] == -1  # never past the unfinished head
        await first.stop()  # commits what is final on the way out
        assert await h.committed(0, 1) == {0: -1, 1: 2}

        healthy = True
        before = len(endpoint.at(fine))
        second = await h.deliverer()
        (ok_head,) = await endpoint.wait_for(stuck, 1)
        assert ok_head.headers["webhook-id"] == head.delivery_id
        redone = (await endpoint.wait_for(fine, before + 2))[before:]
        # Redelivered from the last commit: the unfinished record and the two behind it
        # (same webhook-ids, receivers deduplicate); partition 1's record is not redone.
        assert [x.headers["webhook-id"] for x in redone] == [d.delivery_id for d in behind]
        await until(lambda: h.committed(0), 5, expect={0: 3})
        # Sentinels on both partitions' lanes (same destination and conversation): a
        # second redo of partition 0, or any redo of partition 1, would arrive before them.
        assert await h.produce([h.delivery(fine_dest, "c", "after-0")], partition=0) == [3]
        assert await h.produce([h.delivery(fine_dest, "d", "after-1")], partition=1) == [2]
        await _until_text(endpoint, fine, "after-0")
        await _until_text(endpoint, fine, "after-1")
        assert sorted(x.text for x in endpoint.at(fine)[before:]) == [
            "after-0", "after-1", "behind-0", "behind-1"]
        # (Counted once the endpoint's answer is back, a moment after it recorded the hit.)
        await until(lambda: second.stats.delivered, 5, expect=5)


async def test_backpressure_pauses_a_full_partition(broker: Any, endpoint: Endpoint) -> None:
    t = _tag()
    hold = f"/{t}/hold"
    endpoint.behaviour[hold] = lambda n, body: (200, {}, 1.0)
    async with harness(broker, endpoint, max_pending_per_partition=4,
                       max_in_flight_per_destination=32) as h:
        dest = await h.integration("hold", path=hold)
        d = await h.deliverer()
        tp = TopicPartition(h.settings.topic(DELIVERIES), 0)
        first = [h.delivery(dest, f"c{i}", f"first-{i}") for i in range(8)]
        await h.produce(first, partition=0)
        await until(lambda: tp in d.paused, 5)  # more than 4 unfinished: stop fetching
        late = [h.delivery(dest, f"l{i}", f"late-{i}") for i in range(3)]
        await h.produce(late, partition=0)
        hits = await endpoint.wait_for(hold, 11)
        first_done = sorted(x.finished for x in hits if x.text.startswith("first"))
        late_started = min(x.started for x in hits if x.text.startswith("late"))
        # Fetching resumed only once at most 2 (half the bound) were unfinished.
        assert late_started >= first_done[0]
        await until(lambda: d.paused, 5, expect=frozenset())
        await until(lambda: h.committed(0), 5, expect={0: 11})
