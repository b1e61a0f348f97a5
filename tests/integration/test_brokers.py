"""The development brokers: Tansu (embedded) and Apache Kafka (real, on disk)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from switchboard.brokers import (
    Broker,
    BrokerError,
    _wait_ready,
    free_port,
    port_accepts,
    start_broker,
)
from switchboard.brokers.kafka import KafkaBroker
from switchboard.brokers.kafka_jars import KAFKA_VERSION, ensure_kafka_jars
from switchboard.brokers.kafka_wire import metadata_ready
from switchboard.brokers.tansu import TansuBroker

Record = tuple[bytes | None, bytes | None]


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _produce(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], *, idempotent: bool
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=idempotent,
        acks="all" if idempotent else 1,
    )
    await producer.start()
    try:
        for key, value in records:
            # One partition, so reads below see a single total order.
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


async def _read_partition(bootstrap: str, topic: str, within_s: float = 20.0) -> list[Record]:
    """Everything in partition 0 from the beginning up to its current end offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[Record] = []
        async with asyncio.timeout(within_s):
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                records.extend((m.key, m.value) for m in batch.get(tp, []))
        return records
    finally:
        await consumer.stop()


# --- shared plumbing ------------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_startup_failure_reports_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_text("line one\nboom: cannot start\n")
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    with pytest.raises(BrokerError, match=r"(?s)exited with code 3.*boom: cannot start"):
        _wait_ready(proc, what="fake", log_path=log, timeout=5, ready=lambda: False)


# --- Tansu ----------------------------------------------------------------------------------


async def test_tansu_produce_consume_stop(tmp_path: Path) -> None:
    started = time.monotonic()
    broker = start_broker("tansu", tmp_path)
    assert time.monotonic() - started < 5
    assert isinstance(broker, TansuBroker)
    with broker:
        assert isinstance(broker, Broker)
        assert broker.kind == "tansu"
        assert broker.log_path == tmp_path / "tansu.log"
        topic = _topic("tansu")
        await _produce(broker.bootstrap, topic, [(b"k", b"hello")], idempotent=False)
        assert await _read_partition(broker.bootstrap, topic) == [(b"k", b"hello")]
    assert not broker.running
    assert broker.process.returncode is not None
    assert not port_accepts(broker.port)


def test_tansu_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            TansuBroker.start(port=port)


def test_tansu_kill() -> None:
    broker = TansuBroker.start()
    broker.kill()
    assert broker.process.returncode == -9
    broker.stop()  # idempotent after death


# --- Apache Kafka ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    # Deliberately no skip: if Maven cannot fetch the jars this fixture errors.
    libs = ensure_kafka_jars()
    broker = KafkaBroker.start(tmp_path_factory.mktemp("kafka"), libs_dir=libs)
    try:
        yield broker
    finally:
        broker.stop()
    assert not broker.running


@pytest.mark.kafka_only
def test_kafka_jars_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = ensure_kafka_jars()
    assert (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert any(p.name.startswith("log4j-slf4j-impl-") for p in libs.iterdir())
    # With a complete cache Maven is not run at all: a broken pom would make it fail.
    broken = tmp_path / "pom.xml"
    broken.write_text("<project>not a valid pom")
    monkeypatch.setenv("SWITCHBOARD_KAFKA_POM", str(broken))
    assert ensure_kafka_jars() == libs


@pytest.mark.kafka_only
def test_kafka_jar_fetch_failure_shows_maven_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project>not a valid pom")
    monkeypatch.setenv("SWITCHBOARD_KAFKA_POM", str(pom))
    libs = tmp_path / "cache" / "libs"
    with pytest.raises(BrokerError, match=r"(?s)Maven failed.*pom\.xml"):
        ensure_kafka_jars(cache_dir=libs)
    assert not libs.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no half-filled staging left


@pytest.mark.kafka_only
async def test_kafka_idempotent_roundtrip_survives_restart(kafka: KafkaBroker) -> None:
    assert isinstance(kafka, Broker)
    assert kafka.kind == "kafka"
    topic = _topic("parity")
    records = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    await _produce(kafka.bootstrap, topic, records, idempotent=True)
    assert await _read_partition(kafka.bootstrap, topic) == records

    bootstrap, data_dir = kafka.bootstrap, kafka.data_dir
    cluster_id = (data_dir / "cluster.id").read_text()
    kafka.restart()
    assert kafka.running
    assert (kafka.bootstrap, kafka.data_dir) == (bootstrap, data_dir)
    assert (data_dir / "cluster.id").read_text() == cluster_id  # not re-formatted
    assert await _read_partition(kafka.bootstrap, topic) == records

    # A crash (SIGKILL) loses nothing acknowledged either: the log recovers on start.
    await _produce(kafka.bootstrap, topic, [(b"c", b"4")], idempotent=True)
    kafka.kill()
    assert not metadata_ready(kafka.port)
    kafka.restart()
    assert await _read_partition(kafka.bootstrap, topic) == [*records, (b"c", b"4")]


@pytest.mark.kafka_only
async def test_kafka_compacts(kafka: KafkaBroker) -> None:
    topic = _topic("compacted")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={
                        "cleanup.policy": "compact",
                        "segment.ms": "100",
                        "min.cleanable.dirty.ratio": "0.01",
                    },
                )
            ]
        )
    finally:
        await admin.close()

    await _produce(
        kafka.bootstrap, topic, [(b"k", f"v{i}".encode()) for i in range(5)], idempotent=True
    )
    # The active segment is never cleaned: once segment.ms has passed, the next append
    # rolls it, which makes every k=v* record eligible.
    await asyncio.sleep(0.3)
    await _produce(kafka.bootstrap, topic, [(b"other", b"x")], idempotent=True)

    deadline = time.monotonic() + 30
    while True:
        seen = await _read_partition(kafka.bootstrap, topic)
        if seen == [(b"k", b"v4"), (b"other", b"x")]:
            break
        assert time.monotonic() < deadline, f"not compacted in 30 s: {seen}"
        await asyncio.sleep(0.5)
