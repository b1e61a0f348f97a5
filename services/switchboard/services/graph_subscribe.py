"""Keeping one profile's Graph subscriptions (the I/O of `switchboard.sync.
graph_subscriptions`), shared by the `sync` worker's `GraphSubscriber` and the hub's
lifecycle notification route (`graph_lifecycle`).

Graph holds the subscriptions; nothing of ours is stored: each look reads
``GET /subscriptions`` and creates, renews and deletes what the plan says.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from switchboard.keys import derive_key, parse_master_keys
from switchboard.services.runtime import Runtime
from switchboard.services.sync_connectors import ConnectorContext, build
from switchboard.sync.errors import ConnectorError
from switchboard.sync.graph_subscriptions import (
    client_state,
    parse_subscriptions,
    plan_subscriptions,
    renewal_body,
    resources,
    subscription_body,
)
from switchboard.sync.profiles import ProfileRecord, open_credentials

if TYPE_CHECKING:
    from switchboard.services.graph_connector import GraphConnector

log = logging.getLogger(__name__)

NOTIFY = "/api/v1/sync/graph/notifications/{profileId}"
LIFECYCLE = "/api/v1/sync/graph/lifecycle/{profileId}"
# How the connector stores a refreshed credential (SyncStore.replace_credential, bound
# to the profile and side).
Rotate = Callable[..., Awaitable[bool]]


def notify_keys(runtime: Runtime) -> list[bytes]:
    """The clientState keys: the newest signs, any still held verifies."""
    return [derive_key(k, "graph-notify")
            for k in parse_master_keys(runtime.settings.sealing_keys)]


def notification_url(runtime: Runtime, profile_id: str) -> str:
    return runtime.settings.public_url.rstrip("/") + NOTIFY.format(profileId=profile_id)


def lifecycle_url(runtime: Runtime, profile_id: str) -> str:
    return runtime.settings.public_url.rstrip("/") + LIFECYCLE.format(profileId=profile_id)


def watched(rec: ProfileRecord) -> bool:
    return (rec.mailbox.kind == "graph" and rec.connected
            and rec.mailbox.configuration.get("changeNotifications") is True)


def mailbox(runtime: Runtime, rec: ProfileRecord, rotate: Rotate) -> GraphConnector:
    creds = open_credentials(runtime.sealer, rec, "mailbox")
    return build("graph", ConnectorContext(  # type: ignore[return-value]
        configuration=rec.mailbox.configuration, credentials=creds,
        settings=runtime.settings, http=runtime.http, runtime=runtime, rotate=rotate))


async def subscribe(runtime: Runtime, rec: ProfileRecord, rotate: Rotate, now: int) -> int:
    """Create, renew and delete so the profile's collections are watched; when to look
    again."""
    pid = rec.profile_id
    conn = mailbox(runtime, rec, rotate)
    modules = {m for m, spec in rec.modules.items() if spec.enabled}
    if "tasks" in modules:
        await conn.tasks_path()  # the configured list, else the user's default one
    wanted = resources(modules, conn.task_list_id)
    url, life = notification_url(runtime, pid), lifecycle_url(runtime, pid)
    answer = await conn.graph.call("GET", "/subscriptions")
    try:
        existing = parse_subscriptions(answer.content)
    except ValueError:
        raise ConnectorError("graph_bad_answer", "Graph's subscription list is not "
                             "one") from None
    plan = plan_subscriptions(existing, wanted, url, now, lifecycle_url=life)
    state = client_state(notify_keys(runtime)[0], pid)
    # Created before deleted: a subscription replaced (no lifecycle URL yet) leaves no gap.
    for resource in plan.create:
        await conn.graph.call("POST", "/subscriptions",
                              json=subscription_body(resource, url, state, now, life))
    for sub_id in plan.renew:
        await conn.graph.call("PATCH", f"/subscriptions/{sub_id}", json=renewal_body(now))
    for sub_id in plan.delete:
        await conn.graph.call("DELETE", f"/subscriptions/{sub_id}")
    if plan.create or plan.renew or plan.delete:
        log.info("graph subscriptions of %s: %d created, %d renewed, %d deleted", pid,
                 len(plan.create), len(plan.renew), len(plan.delete))
    return plan.next_check_ms


async def reauthorize(runtime: Runtime, rec: ProfileRecord, rotate: Rotate,
                      sub_id: str) -> None:
    """Graph's ``POST /subscriptions/{id}/reauthorize`` (204), with the profile's token,
    refreshed first if it has to be."""
    conn = mailbox(runtime, rec, rotate)
    await conn.graph.call("POST", f"/subscriptions/{sub_id}/reauthorize")
