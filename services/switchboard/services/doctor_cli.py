"""`switchboard doctor`: checks a deployment from where the command runs, one line per
finding (``ok|warn|FAIL  <check>  <what to fix>``), exit 1 when any FAIL.

Configuration (the environment, as `serve` reads it), the broker (reachable, with the
configured security, how fast), the hub's topics (present, partitions, compaction and
retention where the broker keeps configs), the clock (against a running API's Date
header) and the secret key (does it open what the registry and the sync profiles hold).
Every network step is bounded by ``--timeout``. It reads; it writes nothing anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from switchboard.broker_config import (
    check_broker_access,
    resolve_replication,
    security_problems,
    topic_problems,
)
from switchboard.doctor import (
    Check,
    KeyFindings,
    failed,
    key_check,
    render,
    skew_check,
    topic_checks,
)
from switchboard.errors import ConfigError
from switchboard.kafka import REGISTRY, SYNC_PROFILES, make_admin
from switchboard.kafka_topics import describe_topics, topic_specs
from switchboard.record_mac import RecordMac, mac_header
from switchboard.registry import RegistryView
from switchboard.sealer import SEALED_V2_PREFIX, Sealer, UnsealError
from switchboard.sealing import sealed_values
from switchboard.services.cli_broker import (
    Target,
    add_broker_args,
    key_source,
    read_table,
    resolve_target,
    tool_settings,
)
from switchboard.settings import Settings
from switchboard.sync.sealed import sealed_values as profile_sealed_values


def _dev_key_in_memory(settings: Settings, target: Target | None) -> bool:
    """A Tansu `dev` without SWITCHBOARD_SECRET_KEY: its key exists only in its memory."""
    return target is not None and target.dev_dir is not None and \
        not settings.sealing_keys.strip()


def check_configuration(target: Target | None) -> tuple[Settings, list[Check]]:
    """The settings the rest is checked with, and what `serve` would say about them."""
    from switchboard.services.cli import check_serve_settings

    overrides: dict[str, Any] = {}
    if target is not None:
        overrides = {"kafka_bootstrap_servers": target.bootstrap, "broker_kind": target.kind}
    try:
        settings = tool_settings(target) if target is not None else Settings.from_env()
    except ConfigError as exc:
        return Settings(**overrides), [Check("FAIL", "config", f"{exc}: fix that variable "
                                             "(the other checks use defaults)")]
    problems = security_problems(settings)
    if problems:
        return settings, [Check("FAIL", "config", "; ".join(problems))]
    if target is not None and _dev_key_in_memory(settings, target):
        return settings, [Check("ok", "config", f"a `switchboard dev` ({target.source}): its "
                                "secret key is made in memory, so `serve`'s checks of it "
                                "do not apply")]
    try:
        check_serve_settings(settings)
    except ConfigError as exc:
        return settings, [Check("FAIL", "config", f"`switchboard serve` would refuse: {exc}")]
    prefix = f"topic prefix {settings.topic_prefix!r}" if settings.topic_prefix else "no prefix"
    return settings, [Check("ok", "config", f"`switchboard serve` accepts it ({prefix}, "
                            f"{settings.partitions} partitions)")]


async def check_broker(settings: Settings, target: Target, timeout_s: float
                       ) -> tuple[int | None, Check]:
    """Connect once (TLS and SASL as configured), then ask for the cluster: the number of
    brokers (None when it failed) and the finding."""
    where = f"{target.bootstrap} (from {target.source})"
    started = time.perf_counter()
    try:
        await check_broker_access(settings, timeout_s=timeout_s)
        connected_ms = (time.perf_counter() - started) * 1000
        admin = make_admin(settings)
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                brokers = len((await admin.describe_cluster()).get("brokers", []))
        finally:
            await admin.close()
    except ConfigError as exc:
        return None, Check("FAIL", "broker", f"{exc}")
    except (KafkaError, OSError, TimeoutError) as exc:
        return None, Check("FAIL", "broker", f"cannot reach {where} within {timeout_s:g} s "
                           f"({exc or type(exc).__name__}): start the broker, or point "
                           "KAFKA_BOOTSTRAP_SERVERS (or --bootstrap) at it")
    return brokers, Check("ok", "broker", f"{where}, {settings.broker_kind}, {brokers} "
                          f"broker(s); connected in {connected_ms:.0f} ms")


async def check_topics(settings: Settings, brokers: int, timeout_s: float) -> list[Check]:
    specs = topic_specs(settings)
    tansu = settings.broker_kind == "tansu"
    admin = make_admin(settings)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            names = set(await admin.list_topics())
            present = [s.name for s in specs if s.name in names]
            counts = {d["topic"]: len(d["partitions"])
                      for d in await admin.describe_topics(present) if not d["error_code"]}
            problems: list[str] = []
            if present and not tansu:
                replication = resolve_replication(settings, brokers)
                wanted = {s.name: s.config for s in specs}
                problems = topic_problems(wanted, await describe_topics(admin, present),
                                          replication)
    except ConfigError as exc:
        return [Check("FAIL", "topics", str(exc))]
    except (KafkaError, OSError, TimeoutError) as exc:
        return [Check("FAIL", "topics", f"could not describe the topics "
                      f"({exc or type(exc).__name__}): does this user may describe them? "
                      "(README, Kafka security)")]
    finally:
        await admin.close()
    return topic_checks(specs, counts, problems, prefix=settings.topic_prefix, tansu=tansu)


def check_clock(url: str | None, tolerance_s: int, timeout_s: float) -> Check:
    """The local clock against the API's (its Date header, one-second resolution)."""
    if not url:
        return Check("warn", "clock", "not checked: pass --url of a running hub (its Date "
                     "header is compared with this clock)")
    try:
        before = time.time()
        resp = httpx.get(f"{url.rstrip('/')}/healthz", timeout=timeout_s)
        after = time.time()
        date = resp.headers.get("date")
        if not date:
            return Check("warn", "clock", f"not checked: {url} sent no Date header")
        theirs = parsedate_to_datetime(date).timestamp()
    except (httpx.HTTPError, ValueError, TypeError) as exc:
        return Check("warn", "clock", f"not checked: {url} did not answer ({exc}); pass "
                     "--url of a running hub")
    # Date drops the fraction: theirs is up to 1 s behind the true instant, so compare
    # its midpoint; the round trip adds its own uncertainty.
    skew = theirs + 0.5 - (before + after) / 2
    return skew_check(skew, 0.5 + (after - before) / 2, tolerance_s, url)


def _foreign_kid(value: str) -> str | None:
    if value.startswith(SEALED_V2_PREFIX):
        return value[len(SEALED_V2_PREFIX):].partition(":")[0] or None
    return None


async def check_key(settings: Settings, target: Target, timeout_s: float) -> Check:
    """Open every sealed value of the registry and of `sync.profiles` (profiles,
    templates, signup apps) and check every record's MAC."""
    if _dev_key_in_memory(settings, target):
        return Check("warn", "secret key", "not checked: this `switchboard dev` made its key "
                     "in memory; start it with SWITCHBOARD_SECRET_KEY set to check the key")
    if not settings.sealing_keys.strip():
        return Check("FAIL", "secret key", "no SWITCHBOARD_SECRET_KEY (or _KEYS) here: set "
                     "the key the hub runs with, to check it opens the registry")
    try:
        sealer = Sealer.from_b64(settings.sealing_keys)
        mac = RecordMac.from_b64(settings.sealing_keys)
    except ConfigError as exc:
        return Check("FAIL", "secret key", str(exc))
    tables: dict[str, list[ConsumerRecord[bytes, bytes]]] = {}
    for table in (REGISTRY, SYNC_PROFILES):
        try:
            tables[table] = await read_table(settings, settings.topic(table), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            return Check("FAIL", "secret key", f"could not read {settings.topic(table)} "
                         f"({exc or type(exc).__name__})")
    view = RegistryView()
    macs_bad = unsigned = 0
    foreign: set[str] = set()
    latest: dict[bytes, bytes | None] = {}  # sync.profiles, the last record of each key
    for table, records in tables.items():
        for rec in records:
            header = mac_header(rec.headers)
            why = mac.verify(table, rec.key, rec.value, header)
            if why == "unsigned":
                unsigned += 1
            elif why is not None:
                macs_bad += 1
                if header is not None and why == "unknown_key":
                    # The header is a version byte, then the signing key's 6-byte id.
                    foreign.add(header[1:7].hex())
            if table == REGISTRY:
                view.apply(rec.offset, rec.key, rec.value)  # every record: what would open?
            elif rec.key is not None:
                latest[rec.key] = rec.value
    values = [pair for integration in view.integrations.values()
              for pair in sealed_values(integration)]
    values += [pair for key, value in latest.items() if value is not None
               for pair in profile_sealed_values(key, value)]
    sealed = unopened = old = 0
    for context, value in values:
        sealed += 1
        try:
            sealer.open(value, context)
        except UnsealError:
            unopened += 1
            kid = _foreign_kid(value)
            if kid is not None and kid not in sealer.key_ids:
                foreign.add(kid)
            continue
        if not sealer.is_current(value):
            old += 1
    findings = KeyFindings(key_ids=sealer.key_ids,
                           records=sum(len(r) for r in tables.values()), macs_bad=macs_bad,
                           unsigned=unsigned, sealed=sealed, unopened=unopened,
                           foreign_key_ids=tuple(sorted(foreign)), old_key_values=old,
                           enforce=settings.record_mac == "enforce")
    return key_check(findings, key_source(target)[0])


async def run_checks(args: argparse.Namespace) -> list[Check]:
    try:
        target: Target | None = resolve_target(args.bootstrap, args.data_dir)
        where_error = ""
    except ConfigError as exc:
        target, where_error = None, str(exc)
    settings, checks = check_configuration(target)
    if target is None:
        return [*checks, Check("FAIL", "broker", where_error)]
    brokers, broker = await check_broker(settings, target, args.timeout)
    checks.append(broker)
    if brokers is not None:
        checks += await check_topics(settings, brokers, args.timeout)
    url = args.url or target.api_url or os.environ.get("SWITCHBOARD_PUBLIC_URL")
    checks.append(await asyncio.to_thread(check_clock, url, settings.timestamp_tolerance_s,
                                          args.timeout))
    if brokers is not None:
        checks.append(await check_key(settings, target, args.timeout * 6))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = asyncio.run(run_checks(args))
    if args.json:
        print(json.dumps([{"status": c.status, "check": c.name, "text": c.text}
                          for c in checks], indent=2))
    else:
        for c in checks:
            print(render(c), flush=True)
    return 1 if failed(checks) else 0


def add_parser(sub: Any) -> None:
    """Add `doctor` to the CLI's subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="check configuration, broker, topics, clock and secret key")
    add_broker_args(p)
    p.add_argument("--url", help="a running hub's base URL, for the clock check (default: "
                                 "`switchboard dev`'s, else $SWITCHBOARD_PUBLIC_URL)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="bound on each network step (default 5)")
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.set_defaults(func=cmd_doctor)
