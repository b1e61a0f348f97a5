"""`switchboard tail activities|deliveries|dead`: follow a hub topic as readable lines (or
JSON lines), straight from the broker, on Apache Kafka and on the embedded Tansu alike.

It joins no consumer group and commits nothing: it assigns itself every partition and
starts at their end (or the beginning, or a time), so following a topic never disturbs
the services reading it. The registry is read too (and followed), to resolve `--hub`
and `--integration` names and to show names instead of ids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.kafka import REGISTRY, make_admin, make_consumer
from switchboard.record_mac import guard_for
from switchboard.registry import RegistryView
from switchboard.services.cli_broker import (
    Target,
    add_broker_args,
    fold_registry,
    resolve_target,
    tool_settings,
)
from switchboard.services.cli_errors import CliError
from switchboard.services.deliveries_cli import parse_time
from switchboard.settings import Settings
from switchboard.tail import TOPICS, as_json, describe, format_line, wanted, when

CONNECT_TIMEOUT_S = 15.0
FETCH_WAIT_MS = 500


def _pick(wanted_name: str, ids: dict[str, str], what: str) -> str:
    """The id among `ids` (id → name) that `wanted_name` is, or names (case-insensitive)."""
    if wanted_name in ids:
        return wanted_name
    named = [i for i, n in ids.items() if n.casefold() == wanted_name.casefold()]
    if len(named) == 1:
        return named[0]
    if named:
        raise CliError(f"several {what}s are named {wanted_name!r}: pass an id "
                       f"({', '.join(named)})")
    raise CliError(f"no {what} with id or name {wanted_name!r} in the registry")


def resolve_filters(view: RegistryView, hub: str | None, integration: str | None
                    ) -> tuple[set[str] | None, set[str] | None]:
    """The hub and integration ids the filters name (None: not filtered)."""
    hubs = None
    if hub is not None:
        hubs = {_pick(hub, {h.hub_id: h.name for h in view.hubs.values()}, "hub")}
    integrations = None
    if integration is not None:
        scope = [r for r in view.integrations.values() if hubs is None or r.hub_id in hubs]
        integrations = {_pick(integration, {r.integration_id: r.name for r in scope},
                              "integration")}
    return hubs, integrations


class Tail:
    """One `tail` run: a consumer on the topic's partitions and the registry's."""

    def __init__(self, settings: Settings, args: argparse.Namespace, target: Target) -> None:
        self.settings = settings
        self.args = args
        self.target = target
        self.topic = settings.topic(TOPICS[args.what])
        self.registry_tp = TopicPartition(settings.topic(REGISTRY), 0)
        self.guard = guard_for(settings) if settings.sealing_keys.strip() else None
        self.view = RegistryView()
        self.printed = 0
        self.stop = asyncio.Event()
        self.following = False  # past the start-up (until then a signal cancels it)
        self._names: tuple[dict[str, str], dict[str, str]] | None = None

    async def run(self) -> int:
        # A person reads along: half a second late is fine, and an idle tail then costs
        # the embedded Tansu (which waits out every fetch) 2 fetches a second, not 100.
        consumer = make_consumer(self.settings, group_id=None, fetch_max_wait_ms=FETCH_WAIT_MS)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await consumer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            print(f"cannot reach the broker at {self.target.bootstrap} (from "
                  f"{self.target.source}): {exc or type(exc).__name__}", file=sys.stderr)
            return 1
        try:
            return await self._follow(consumer)
        finally:
            await consumer.stop()

    async def _partitions(self) -> dict[str, int]:
        """Topic → partition count, for the followed topic and the registry (if they exist)."""
        admin = make_admin(self.settings)
        await admin.start()
        try:
            described = await admin.describe_topics([self.topic, self.registry_tp.topic])
        finally:
            await admin.close()
        return {d["topic"]: len(d["partitions"]) for d in described
                if not d["error_code"] and d["partitions"]}

    async def _follow(self, consumer: AIOKafkaConsumer) -> int:
        topics = await self._partitions()
        if self.topic not in topics:
            print(f"no topic {self.topic} on {self.target.bootstrap}: is SWITCHBOARD_TOPIC_PREFIX "
                  "right, and has a hub started there?", file=sys.stderr)
            return 1
        registry = self.registry_tp.topic in topics
        refused = 0
        if registry:
            consumer.assign([self.registry_tp])
            await consumer.seek_to_beginning(self.registry_tp)
            end = (await consumer.end_offsets([self.registry_tp]))[self.registry_tp]
            records = []
            while await consumer.position(self.registry_tp) < end:
                records += (await consumer.getmany(self.registry_tp, timeout_ms=500)).get(
                    self.registry_tp, [])
            self.view, refused = fold_registry(records, self.settings)
        try:
            hubs, integrations = resolve_filters(self.view, self.args.hub,
                                                 self.args.integration)
        except CliError as exc:
            if not refused:
                raise
            raise CliError(f"{exc} ({refused} of its records do not carry this key's MAC: "
                           "is SWITCHBOARD_SECRET_KEY the hub's?)") from None
        tps = [TopicPartition(self.topic, p) for p in range(topics[self.topic])]
        registry_at = await consumer.position(self.registry_tp) if registry else 0
        consumer.assign(tps + ([self.registry_tp] if registry else []))
        if registry:
            consumer.seek(self.registry_tp, registry_at)
        where = await self._seek(consumer, tps)
        # Positions are resolved now, so everything written after this line is shown.
        for tp in tps:
            await consumer.position(tp)
        print(f"following {self.topic} ({len(tps)} partitions) on {self.target.bootstrap} "
              f"from {where}; Ctrl-C stops", file=sys.stderr, flush=True)
        self.following = True
        while not self.stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for rec in batch.pop(self.registry_tp, []):
                if self.guard is None or self.guard.verdict(
                        rec.topic, rec.key, rec.value, rec.headers) is None:
                    self.view.apply(rec.offset, rec.key, rec.value)
                    self._names = None
            records = sorted((r for rs in batch.values() for r in rs),
                             key=lambda r: (r.timestamp, r.partition, r.offset))
            for rec in records:
                if self._show(rec, hubs, integrations) and self.args.max and \
                        self.printed >= self.args.max:
                    return 0
        return 0

    async def _seek(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> str:
        if self.args.from_beginning:
            await consumer.seek_to_beginning(*tps)
            return "the beginning"
        if self.args.since is None:
            await consumer.seek_to_end(*tps)
            return "the end"
        found = await consumer.offsets_for_times({tp: self.args.since for tp in tps})
        later = [tp for tp, at in found.items() if at is None]
        if later:
            await consumer.seek_to_end(*later)
        for tp, at in found.items():
            if at is not None:
                consumer.seek(tp, at.offset)
        return f"{when(self.args.since)} UTC (ms {self.args.since})"

    def names(self) -> tuple[dict[str, str], dict[str, str]]:
        """Hub and integration names by id (made again only after the registry changed)."""
        if self._names is None:
            self._names = ({h.hub_id: h.name for h in self.view.hubs.values()},
                           {i.integration_id: i.name for i in self.view.integrations.values()})
        return self._names

    def _show(self, rec: ConsumerRecord[bytes, bytes], hubs: set[str] | None,
              integrations: set[str] | None) -> bool:
        line = describe(self.args.what, rec.value)
        if line is None:
            if hubs is not None or integrations is not None:
                return False
        elif not wanted(line, hubs, integrations):
            return False
        if self.args.json:
            print(as_json(rec.value or b""), flush=True)
        elif line is None:
            print(f"{rec.topic}[{rec.partition}]@{rec.offset}: not a {self.args.what} record "
                  f"({len(rec.value or b'')} bytes)", flush=True)
        else:
            why = None if self.guard is None else self.guard.verdict(
                rec.topic, rec.key, rec.value, rec.headers)
            note = f"not written by this hub: {why.replace('_', ' ')}" if why else ""
            print(format_line(line, *self.names(), note), flush=True)
        self.printed += 1
        return True


async def _main(args: argparse.Namespace, settings: Settings, target: Target) -> int:
    tail = Tail(settings, args, target)
    task = asyncio.create_task(tail.run())

    def on_signal() -> None:
        # Following: finish the batch in hand and stop. Starting up: stop at once.
        tail.stop.set()
        if not tail.following:
            task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await task
    except asyncio.CancelledError:
        return 0


def cmd_tail(args: argparse.Namespace) -> int:
    # ConfigError (no broker, a malformed key) and CliError reach the CLI's one-line errors.
    target = resolve_target(args.bootstrap, args.data_dir)
    settings = tool_settings(target)
    if settings.sealing_keys.strip():
        guard_for(settings)  # a malformed key: now, not at the first record
    try:
        return asyncio.run(_main(args, settings, target))
    except BrokenPipeError:
        # `tail … | head`: the reader is gone; nothing is wrong. Quiet the exit flush.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def add_parser(sub: Any) -> None:
    """Add `tail` to the CLI's subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "tail", help="follow activities, deliveries or dead letters as they happen")
    p.add_argument("what", choices=list(TOPICS), help="the topic to follow")
    p.add_argument("--hub", help="only this hub (id or name, case-insensitive)")
    p.add_argument("--integration",
                   help="only this integration (id or name): the source of an activity, the "
                        "destination of a delivery or dead letter")
    p.add_argument("--json", action="store_true", help="each record's JSON, one per line")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true",
                       help="start at the oldest record kept (default: only new ones)")
    start.add_argument("--since", type=parse_time,
                       help="start at records written since then (ms, ISO 8601 or 10m)")
    p.add_argument("--max", type=int, default=0, metavar="N", help="stop after N records")
    add_broker_args(p)
    p.set_defaults(func=cmd_tail)
