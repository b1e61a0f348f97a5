"""What the CLI's broker commands (`switchboard tail`, `switchboard doctor`) share: which
broker to talk to, the settings to talk to it with, and reading a table topic whole.

The broker: `--bootstrap`, else ``KAFKA_BOOTSTRAP_SERVERS``, else the ``dev.json`` that a
running `switchboard dev` keeps in its data directory (``--data-dir``, else
``SWITCHBOARD_DATA_DIR``, else ``./var``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec
from aiokafka import ConsumerRecord
from aiokafka.structs import TopicPartition
from msgspec import Struct

from switchboard import devstate
from switchboard.errors import ConfigError
from switchboard.kafka import make_consumer
from switchboard.registry import RegistryView
from switchboard.settings import Settings


class Target(Struct, frozen=True):
    """The broker to talk to, and where that came from (for messages)."""

    bootstrap: str
    kind: str  # kafka | tansu
    source: str
    api_url: str | None = None  # the `dev` hub's API, when the address came from dev.json
    dev_dir: str | None = None  # that `dev`'s data directory


def add_broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="the broker (default: $KAFKA_BOOTSTRAP_SERVERS, else the one a "
                        "running `switchboard dev` names in <data-dir>/dev.json)")
    p.add_argument("--data-dir", default=None,
                   help="where `switchboard dev` keeps dev.json (default: "
                        "$SWITCHBOARD_DATA_DIR, else ./var)")


def resolve_target(bootstrap: str | None, data_dir: str | None,
                   env: Mapping[str, str] | None = None) -> Target:
    """The broker to use (ConfigError saying what to pass when there is none)."""
    env = os.environ if env is None else env
    kind = env.get("SWITCHBOARD_BROKER_KIND") or "kafka"
    if bootstrap:
        return Target(bootstrap, kind, "--bootstrap")
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        return Target(env["KAFKA_BOOTSTRAP_SERVERS"], kind, "KAFKA_BOOTSTRAP_SERVERS")
    directory = Path(data_dir or env.get("SWITCHBOARD_DATA_DIR") or "var")
    path = directory / devstate.FILE_NAME
    try:
        dev = devstate.decode(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no broker: pass --bootstrap HOST:PORT, set KAFKA_BOOTSTRAP_SERVERS, "
                          f"or start `switchboard dev` (then {path} names its broker)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if dev is None:
        raise ConfigError(f"{path} is not what `switchboard dev` writes: pass --bootstrap")
    return Target(dev.bootstrap, dev.broker, str(path), api_url=dev.url,
                  dev_dir=str(directory))


def key_source(target: Target | None, env: Mapping[str, str] | None = None
               ) -> tuple[str, str | None]:
    """Where the secret key comes from, and the key when it is not in the environment:
    ``SWITCHBOARD_SECRET_KEYS``/``_KEY``, else the ``dev-secrets.json`` that `switchboard
    dev --broker kafka` keeps beside its data (a Tansu `dev` keeps its key in memory only)."""
    env = os.environ if env is None else env
    for name in ("SWITCHBOARD_SECRET_KEYS", "SWITCHBOARD_SECRET_KEY"):
        if env.get(name):
            return name, None
    if target is not None and target.dev_dir is not None:
        path = Path(target.dev_dir) / "dev-secrets.json"
        try:
            key = msgspec.json.decode(path.read_bytes()).get("secret_key")
        except (OSError, msgspec.DecodeError, AttributeError):
            key = None
        if isinstance(key, str) and key:
            return str(path), key
    return "no key set", None


def tool_settings(target: Target, env: Mapping[str, str] | None = None) -> Settings:
    """The deployment's settings (topic prefix, Kafka security, secret key) pointed at
    `target` (ConfigError if the environment holds a malformed value)."""
    overrides: dict[str, object] = {"kafka_bootstrap_servers": target.bootstrap,
                                    "broker_kind": target.kind}
    _, dev_key = key_source(target, env)
    if dev_key is not None:
        overrides["secret_key"] = dev_key
    return Settings.from_env(env, **overrides)


async def read_table(settings: Settings, topic: str, timeout_s: float = 30.0
                     ) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of single-partition `topic` (prefixed) up to its end now, in order
    ([] if the topic does not exist)."""
    consumer = make_consumer(settings, group_id=None)
    async with asyncio.timeout(timeout_s):
        await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(timeout_s):
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                out.extend(batch.get(tp, []))
        return out
    finally:
        await consumer.stop()


def fold_registry(records: list[ConsumerRecord[bytes, bytes]], settings: Settings
                  ) -> tuple[RegistryView, int]:
    """The registry as the hub sees it, and how many records were left out for lacking
    this deployment's MAC (with no secret key known, every record is taken at its word)."""
    from switchboard.record_mac import guard_for

    guard = guard_for(settings) if settings.sealing_keys.strip() else None
    view = RegistryView()
    refused = 0
    for rec in records:
        if guard is None or guard.verdict(rec.topic, rec.key, rec.value, rec.headers) is None:
            view.apply(rec.offset, rec.key, rec.value)
        else:
            refused += 1
    return view, refused
