"""What the development broker keeps, and what keeping it costs.

A fresh broker (Tansu by default, ``--broker kafka`` for Apache Kafka) gets ``--records``
400-byte records at ``--rate`` per second (acks=all, 4 partitions, 50 keys) while a
consumer reads them, as the hub's stages do. Reported per window of ``--window`` records:
produce latency p50/p99 and the broker's resident memory. Then whether it gives memory
back the two ways Kafka does: a topic created with ``retention.ms=2000`` (are its records
gone after the retention check?) and ``DeleteRecords`` (the admin call).

    .venv/bin/python benchmarks/broker_growth.py [--records 20000] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import latency_summary, machine_note, rss_mib
from switchboard.brokers import start_broker


async def grow(bootstrap: str, pid: int | None, args: argparse.Namespace) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("grow", 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer("grow", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()

    async def read() -> None:
        while True:
            await consumer.getmany(timeout_ms=100)

    reader = asyncio.create_task(read())
    windows: list[dict[str, Any]] = []
    latencies: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        fut = await producer.send("grow", b"x" * 400, key=str(i % 50).encode())
        await fut
        latencies.append(time.perf_counter() - t0)

    try:
        start = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for i in range(args.records):
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
            if (i + 1) % args.window == 0:
                await asyncio.gather(*tasks)
                tasks.clear()
                windows.append({"records": i + 1, **latency_summary(latencies),
                                "rss_mib": round(rss_mib(pid), 1)})
                latencies.clear()
        await asyncio.gather(*tasks)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return windows


async def gives_back(bootstrap: str) -> dict[str, str]:
    """Does the broker drop records by retention.ms, or on DeleteRecords?"""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.records_to_delete import RecordsToDelete
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await producer.start()
    await consumer.start()
    out: dict[str, str] = {}
    try:
        await admin.create_topics([NewTopic("short", 1, 1, topic_configs={
            "retention.ms": "2000", "segment.ms": "1000"}), NewTopic("trim", 1, 1)])
        for topic in ("short", "trim"):
            for _ in range(100):
                await producer.send(topic, b"x" * 400)
        await producer.flush()
        trim = TopicPartition("trim", 0)
        try:
            await admin.delete_records({trim: RecordsToDelete(50)})
            out["DeleteRecords"] = "accepted"
        except Exception as exc:
            out["DeleteRecords"] = f"refused ({type(exc).__name__})"
        await asyncio.sleep(15)  # past retention.ms, segment.ms and a retention check
        short = TopicPartition("short", 0)
        begins = await consumer.beginning_offsets([short, trim])
        out["retention.ms=2000, 15 s later"] = f"log start offset {begins[short]} of 100"
        out["after DeleteRecords(50)"] = f"log start offset {begins[trim]} of 100"
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--window", type=int, default=5_000)
    args = parser.parse_args(argv)
    print(f"machine: {machine_note()}")
    broker = start_broker(args.broker, Path(tempfile.mkdtemp(prefix="switchboard-growth-")))
    try:
        pid = broker.process.pid if broker.process is not None else None
        before = rss_mib(pid)
        windows = asyncio.run(grow(broker.bootstrap, pid, args))
        print(f"{args.broker}: {args.records} records of 400 B at {args.rate:g}/s, "
              f"a consumer reading; resident memory {before:.0f} MiB at start")
        print(f"{'records':>8} {'produce p50 ms':>15} {'p99 ms':>8} {'RSS MiB':>8}")
        for w in windows:
            print(f"{w['records']:8d} {w['p50_ms']:15.2f} {w['p99_ms']:8.2f} "
                  f"{w['rss_mib']:8.1f}")
        grown = windows[-1]["rss_mib"] - before
        print(f"memory kept: {grown * 1024 / args.records:.2f} KiB per record")
        for what, answer in asyncio.run(gives_back(broker.bootstrap)).items():
            print(f"{what}: {answer}")
    finally:
        broker.stop()
    print(f"machine: {machine_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
