"""The hub's topic set-up: every topic's partitions and configs (`topic_specs`), creating
the missing ones and checking those that already exist against the deployment
(`ensure_topics`, `describe_topics`). The topic names are in `switchboard.kafka`.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.structs import TopicPartition
from msgspec import Struct

from switchboard.broker_config import (
    Replication,
    TopicState,
    check_broker_access,
    resolve_replication,
    topic_problems,
)
from switchboard.errors import ConfigError
from switchboard.kafka import (
    ACTIVITIES,
    ACTIVITIES_DEAD,
    ATTEMPTS,
    CONVERSATIONS,
    DEAD,
    DELIVERIES,
    JOBS,
    PARKED,
    REGISTRY,
    STREAM_CURSORS,
    SYNC_JOBS,
    SYNC_PAIRS,
    SYNC_PROFILES,
    SYNC_RUNS,
    SYNC_STATUS,
    SYNCRO_SLOTS,
    make_admin,
    make_consumer,
)
from switchboard.providers.syncro_budget import Rule
from switchboard.settings import Settings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


class TopicSpec(Struct, frozen=True):
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the hub uses. Tables are single-partition so their order is total.

    Logs keep `retention_hours` of history (what redelivery, replay and the delivery log
    reach back to); parked lanes are kept until resolved however long that takes (a
    disabled destination holds its deliveries), so `deliveries.parked` never expires.
    """
    n = settings.partitions
    log = {"retention.ms": str(int(settings.retention_hours * 3600 * 1000))}
    return [
        TopicSpec(settings.topic(REGISTRY), 1, COMPACTED),
        TopicSpec(settings.topic(CONVERSATIONS), 1, COMPACTED),
        TopicSpec(settings.topic(STREAM_CURSORS), 1, COMPACTED),
        TopicSpec(settings.topic(ACTIVITIES), n, log),
        TopicSpec(settings.topic(DELIVERIES), n, log),
        TopicSpec(settings.topic(DEAD), 1, log),
        TopicSpec(settings.topic(ACTIVITIES_DEAD), 1, log),
        TopicSpec(settings.topic(PARKED), n, {"retention.ms": "-1"}),
        TopicSpec(settings.topic(ATTEMPTS), n, log),
        TopicSpec(settings.topic(JOBS), 1, COMPACTED),
        TopicSpec(settings.topic(SYNCRO_SLOTS), n, {
            "retention.ms": str(slots_retention_ms(settings)),
            "message.timestamp.type": "LogAppendTime"}),
        TopicSpec(settings.topic(SYNC_PROFILES), 1, COMPACTED),
        TopicSpec(settings.topic(SYNC_STATUS), 1, COMPACTED),
        TopicSpec(settings.topic(SYNC_PAIRS), 1, COMPACTED),
        TopicSpec(settings.topic(SYNC_JOBS), n, log),
        TopicSpec(settings.topic(SYNC_RUNS), 1, sync_runs_config(settings)),
    ]


def sync_runs_config(settings: Settings) -> dict[str, str]:
    """`sync.runs` is a table keyed by run id, and runs never stop coming (a schedule every
    15 minutes is 35,000 runs a year per profile): compaction alone would keep every run
    for ever. `jobs` needs no bound (a person starts each job, a few a day); here a run's
    record is also deleted `SWITCHBOARD_SYNC_RUNS_RETENTION_DAYS` after its last write
    (`compact,delete`), so a restarted process lists that much history."""
    days = settings.sync_runs_retention_days
    return {**COMPACTED, "cleanup.policy": "compact,delete",
            "retention.ms": str(int(days * 24 * 3600 * 1000))}


def slots_retention_ms(settings: Settings) -> int:
    """`syncro.slots` is read back one `Rule.lookback` (minutes) at most: keep an hour, or
    twice that."""
    rule = Rule.for_budget(settings.syncro_rate_limit, settings.syncro_rate_window_s)
    return max(3600 * 1000, int(2 * rule.lookback * 1000))


async def ensure_topics(settings: Settings) -> None:
    """Check the credentials, create any missing topic (with the deployment's replication
    factor and `min.insync.replicas`), then check the topics that already existed.

    Refused credentials, missing ACLs and (with `topic_check=refuse`) under-replicated or
    uncompacted table topics raise ConfigError: the process must not start. On Tansu
    (development only, one node, no topic configs) the checks are skipped.
    """
    await check_broker_access(settings)
    admin = make_admin(settings)
    await admin.start()
    try:
        replication = await _ensure_topics(settings, admin)
        log.info("topics: replication factor %d, min.insync.replicas %d",
                 replication.factor, replication.min_insync)
    except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
        raise ConfigError(f"Kafka refused the hub's topic set-up ({exc.__class__.__name__}: "
                          f"{exc}); see the README (Kafka security) for the ACLs each "
                          "service needs") from None
    finally:
        await admin.close()


async def _ensure_topics(settings: Settings, admin: AIOKafkaAdminClient) -> Replication:
    tansu = settings.broker_kind == "tansu"
    brokers = len((await admin.describe_cluster()).get("brokers", []))
    replication = Replication(1, 1) if tansu else resolve_replication(settings, brokers)
    specs = topic_specs(settings)
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing:
        extra = {} if tansu else {"min.insync.replicas": str(replication.min_insync)}
        new = [
            NewTopic(s.name, num_partitions=s.partitions,
                     replication_factor=replication.factor,
                     topic_configs={**s.config, **extra})
            for s in missing
        ]
        response = await admin.create_topics(new)
        for name, code, *_ in response.topic_errors:
            # Already there: another process won the race.
            if code not in (0, TopicAlreadyExistsError.errno):
                raise for_code(code)(f"creating topic {name}")
        if not tansu and settings.topic_ready_wait_s > 0:
            await _await_leaders(settings, missing, settings.topic_ready_wait_s)
    before = [s for s in specs if s.name in existing]
    if tansu or not before:
        return replication
    problems = topic_problems({s.name: s.config for s in before},
                              await describe_topics(admin, [s.name for s in before]),
                              replication)
    if problems:
        text = ("existing topics are weaker than this deployment asks for: "
                + "; ".join(problems))
        if settings.topic_check == "refuse":
            raise ConfigError(text + " (fix the topics, or set SWITCHBOARD_TOPIC_CHECK=warn "
                              "to start anyway)")
        log.warning("%s", text)
    return replication


async def _await_leaders(settings: Settings, created: list[TopicSpec],
                         timeout_s: float) -> None:
    """Wait until every partition of the topics just created answers for its offsets (its
    leader serves it: the metadata claims a leader a moment before). Clients started
    earlier retry by themselves, but fill the log with NotLeaderForPartition lines; after
    `timeout_s`, start anyway (they retry)."""
    tps = [TopicPartition(s.name, p) for s in created for p in range(s.partitions)]
    probe = make_consumer(settings, group_id=None)
    try:
        async with asyncio.timeout(timeout_s):
            await probe.start()
            await probe.end_offsets(tps)  # retried quietly by aiokafka until each answers
    except (KafkaError, TimeoutError) as exc:
        log.warning("topics not ready after %.0f s (%r); starting anyway", timeout_s, exc)
    finally:
        await probe.stop()


async def describe_topics(admin: AIOKafkaAdminClient, names: list[str]) -> list[TopicState]:
    """Replication factor (smallest over partitions) and effective configs of `names`."""
    factors: dict[str, int] = {}
    for topic in await admin.describe_topics(names):
        if topic["error_code"]:
            raise for_code(topic["error_code"])(f"describing topic {topic['topic']}")
        replicas = [len(p["replicas"]) for p in topic["partitions"]]
        factors[topic["topic"]] = min(replicas) if replicas else 0
    configs: dict[str, dict[str, str]] = {name: {} for name in names}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    for response in responses:
        for code, _msg, _type, name, entries in response.resources:
            if code:
                raise for_code(code)(f"describing the configs of topic {name}")
            for entry in entries:
                if entry[1] is not None:
                    configs.setdefault(name, {})[entry[0]] = entry[1]
    return [TopicState(name, factors.get(name, 0), configs.get(name, {})) for name in names]
