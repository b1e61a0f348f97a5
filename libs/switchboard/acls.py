"""The Kafka ACLs each service needs, derived from what its code reads and writes.

Every service starts the shared runtime: it checks and (when missing) creates the topics,
reads the `registry` and `conversations` tables and produces with the idempotent producer
(Kafka 3+ grants that with Write on any topic, so no cluster ACL is needed). On top of
that each service reads and writes its own topics; only the router and the deliverer
consume in a group. All resource names are literal (topic prefix included), so one Kafka
cluster can host several deployments that cannot touch each other's topics.

The README's table ("Kafka security") is this function written out; an integration test
runs every service as its own principal with exactly these ACLs on an authorizing broker.
"""

from __future__ import annotations

from typing import Final, Literal

from msgspec import Struct

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
)
from switchboard.kafka_topics import topic_specs
from switchboard.settings import Settings

Operation = Literal["Read", "Write", "Create", "Describe", "DescribeConfigs"]


class Acl(Struct, frozen=True, order=True):
    resource: Literal["topic", "group"]
    name: str  # literal
    operation: Operation


# Topics each service reads and writes beyond the runtime's own (registry, conversations).
READS: Final[dict[str, tuple[str, ...]]] = {
    # delivery log, redelivery and replay (read back by offset), job progress; Syncro's
    # budget (claims read back) where the API calls Syncro, as the deliverer does; sync
    # profiles and their status
    "api": (DELIVERIES, ATTEMPTS, JOBS, SYNCRO_SLOTS, SYNC_PROFILES, SYNC_STATUS,
            SYNC_RUNS),
    # web chat: a visitor's history and live answers
    "ingress": (DELIVERIES,),
    # websocket delivery and its acked cursors
    "stream": (DELIVERIES, STREAM_CURSORS),
    "router": (ACTIVITIES,),
    "deliverer": (DELIVERIES, PARKED, SYNCRO_SLOTS),
    # run requests, the profiles they name, status, pair indexes and watermarks
    "sync": (SYNC_JOBS, SYNC_PROFILES, SYNC_STATUS, SYNC_PAIRS, SYNC_RUNS),
}
WRITES: Final[dict[str, tuple[str, ...]]] = {
    # hubs and integrations; redelivered and replayed deliveries; job progress; claims
    # and 429 blocks of Syncro's budget; sync profiles, run requests and their status
    "api": (REGISTRY, DELIVERIES, JOBS, SYNCRO_SLOTS, SYNC_PROFILES, SYNC_JOBS, SYNC_STATUS,
            SYNC_RUNS),
    # activities from every channel; how far a Syncro ticket's comments were relayed
    # (the conversation's cursor)
    "ingress": (ACTIVITIES, CONVERSATIONS),
    "stream": (STREAM_CURSORS,),
    # deliveries; conversations opened, noted active and ended; activities kept aside
    "router": (DELIVERIES, CONVERSATIONS, ACTIVITIES_DEAD),
    # parked lanes, the delivery log, dead letters, events (delivery_failed,
    # integration_disabled), a disabled destination's statusId, Slack thread ids, Syncro
    # budget claims
    "deliverer": (PARKED, ATTEMPTS, DEAD, ACTIVITIES, REGISTRY, CONVERSATIONS, SYNCRO_SLOTS),
    # run status and review reports, pairs and watermarks; a profile's refresh token
    # rotated by its provider (Microsoft Graph)
    "sync": (SYNC_STATUS, SYNC_PAIRS, SYNC_PROFILES, SYNC_RUNS),
}
# Consumer groups (prefixed like the topics; the services' GROUP constants).
GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "api": (), "ingress": (), "stream": (), "router": ("switchboard-router",),
    "deliverer": ("switchboard-deliverer",), "sync": ("switchboard-sync",),
}
SERVICES: Final = tuple(READS)


def required_acls(settings: Settings, service: str) -> list[Acl]:
    """Every ACL (allow, any host) the principal running `service` needs, sorted."""
    if service not in READS:
        raise ValueError(f"unknown service {service!r}")
    acls: set[Acl] = set()
    for spec in topic_specs(settings):
        # The start-up check (metadata, configs) and the creation of missing topics.
        # Create may be revoked once every topic exists.
        for op in ("Describe", "DescribeConfigs", "Create"):
            acls.add(Acl("topic", spec.name, op))
    for topic in (REGISTRY, CONVERSATIONS, *READS[service]):
        acls.add(Acl("topic", settings.topic(topic), "Read"))
    for topic in WRITES[service]:
        acls.add(Acl("topic", settings.topic(topic), "Write"))
    for group in GROUPS[service]:
        acls.add(Acl("group", settings.topic_prefix + group, "Read"))
    return sorted(acls)
