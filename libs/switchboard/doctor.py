"""What `switchboard doctor` concludes from what it measured: one `Check` per finding,
each with what to fix. Pure; switchboard.services.doctor_cli does the measuring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Literal

from msgspec import Struct

from switchboard.kafka import DELIVERIES, PARKED
from switchboard.kafka_topics import TopicSpec

Status = Literal["ok", "warn", "FAIL"]
# Past this, a clock is visibly off (the API's Date header has a one-second resolution).
SKEW_WARN_S: Final = 3.0


class Check(Struct, frozen=True):
    status: Status
    name: str
    text: str


def render(check: Check) -> str:
    """``ok    broker      127.0.0.1:9092 (kafka) answered in 4 ms``."""
    return f"{check.status:<5} {check.name:<11} {check.text}"


def failed(checks: Iterable[Check]) -> bool:
    return any(c.status == "FAIL" for c in checks)


def topic_checks(specs: list[TopicSpec], partitions: Mapping[str, int], problems: list[str],
                 *, prefix: str, tansu: bool) -> list[Check]:
    """The topics the hub uses (`specs`) against those that exist (`partitions`: name →
    partition count) and the config `problems` the broker's descriptions showed."""
    missing = [s.name for s in specs if s.name not in partitions]
    if len(missing) == len(specs):
        return [Check("warn", "topics", f"none of the hub's topics exist (prefix {prefix!r}): "
                      "the first `switchboard serve` or `dev` creates them; if the hub runs, "
                      "set SWITCHBOARD_TOPIC_PREFIX to its prefix")]
    out: list[Check] = []
    if missing:
        out.append(Check("warn", "topics", f"missing {', '.join(missing)}: created at the next "
                         "start of a service (an older release may not use them yet)"))
    tables = {s.name for s in specs if s.config.get("cleanup.policy") == "compact"}
    for s in specs:
        have = partitions.get(s.name)
        if have is None or have == s.partitions:
            continue
        if s.name in tables:
            out.append(Check("FAIL", "topics", f"{s.name} has {have} partitions, a table needs "
                             "exactly 1 (its order must be total): recreate it with 1"))
        else:
            out.append(Check("warn", "topics", f"{s.name} has {have} partitions, "
                             f"SWITCHBOARD_PARTITIONS says {s.partitions}: the topic's count "
                             f"is what runs; set SWITCHBOARD_PARTITIONS={have} to match"))
    deliveries, parked = prefix + DELIVERIES, prefix + PARKED
    if deliveries in partitions and parked in partitions and \
            partitions[deliveries] != partitions[parked]:
        out.append(Check("FAIL", "topics", f"{deliveries} has {partitions[deliveries]} "
                         f"partitions but {parked} {partitions[parked]}: partition p of both "
                         "must belong to the same deliverer; give them the same count"))
    for problem in problems:
        out.append(Check("FAIL", "topics", problem + _fix(problem)))
    if out:
        return out
    note = (" (Tansu keeps no topic configs: compaction and retention not checked)"
            if tansu else "; replication and configs as this deployment asks")
    return [Check("ok", "topics", f"all {len(specs)} topics, partitions as expected{note}")]


def _fix(problem: str) -> str:
    if "cleanup.policy" in problem or "retention.ms" in problem or "timestamp.type" in problem:
        return (": fix it with kafka-configs.sh --alter --entity-type topics "
                "--add-config <name>=<value>")
    if "min.insync.replicas" in problem:
        return ": raise it with kafka-configs.sh --alter --add-config min.insync.replicas=N"
    return ": add replicas with kafka-reassign-partitions.sh, or recreate the topic"


def skew_check(skew_s: float, uncertainty_s: float, tolerance_s: int, where: str) -> Check:
    """The local clock against `where`'s (`skew_s` = theirs minus ours)."""
    off = max(0.0, abs(skew_s) - uncertainty_s)
    said = f"{where} is {abs(skew_s):.1f} s {'ahead' if skew_s > 0 else 'behind'}"
    if off > tolerance_s:
        return Check("FAIL", "clock", f"{said}: past the {tolerance_s} s signatures are "
                     "accepted within (SWITCHBOARD_TIMESTAMP_TOLERANCE_S), so signed requests "
                     "fail; synchronise both clocks (NTP)")
    if off > SKEW_WARN_S:
        return Check("warn", "clock", f"{said}: signatures tolerate {tolerance_s} s, but "
                     "logs and delivery times disagree; synchronise the clocks (NTP)")
    return Check("ok", "clock", f"within {max(SKEW_WARN_S, uncertainty_s):.0f} s of {where}")


class KeyFindings(Struct, frozen=True, kw_only=True):
    """What reading the registry and `sync.profiles` with the configured keys showed."""

    key_ids: tuple[str, ...]  # configured, the sealing one first
    records: int
    macs_bad: int  # records whose MAC names a key not configured, or does not verify
    unsigned: int
    sealed: int
    unopened: int
    # Key ids named by values (or MACs) that did not open / verify.
    foreign_key_ids: tuple[str, ...] = ()
    # Values that opened under a configured key other than the sealing one.
    old_key_values: int = 0
    enforce: bool = True


def key_check(f: KeyFindings, source: str) -> Check:
    """FAIL when the configured key cannot open what the registry holds (naming it by its
    id, never the key), warn when `switchboard reseal` has something to do."""
    current = f.key_ids[0] if f.key_ids else "?"
    if f.records == 0:
        return Check("ok", "secret key", f"key {current} ({source}); the registry is empty, "
                     "nothing sealed yet")
    refused = f.macs_bad + (f.unsigned if f.enforce else 0)
    if f.unopened or refused:
        parts = []
        if f.unopened:
            parts.append(f"{f.unopened} of {f.sealed} sealed values do not open")
        if refused:
            parts.append(f"{refused} of {f.records} records (registry, sync profiles) "
                         "fail their MAC")
        foreign = (f" (they name key {', '.join(f.foreign_key_ids)})"
                   if f.foreign_key_ids else "")
        return Check("FAIL", "secret key", f"{' and '.join(parts)} with key "
                     f"{', '.join(f.key_ids)} from {source}{foreign}: set the key that sealed "
                     "them; to move to a new key, list both in SWITCHBOARD_SECRET_KEYS (new "
                     "first) and run `switchboard reseal`")
    if f.old_key_values or (f.unsigned and not f.enforce):
        return Check("warn", "secret key", f"{f.old_key_values} sealed values under an older "
                     f"key, {f.unsigned} records without a MAC: run `switchboard reseal`, "
                     "then the older keys can go")
    return Check("ok", "secret key", f"key {current} ({source}) opens all {f.sealed} sealed "
                 f"values, and all {f.records} records of the registry and sync profiles carry "
                 "its valid MAC")
