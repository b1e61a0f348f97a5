"""Graph change notifications (pure parts in `switchboard.sync.graph_subscriptions`).

- ``POST /api/v1/sync/graph/notifications/{profileId}`` (public: Graph posts here):
  ``?validationToken=`` is Graph's handshake, answered 200 text/plain with the token;
  a notification whose clientState is the profile's triggers a coalesced incremental run
  (`sync_webhooks.trigger`), 202. One with a wrong or missing clientState is 202 too and
  ignored (logged): Microsoft says to discard it, and an error would only make Graph
  retry it or tell a forger what we check.
- `GraphSubscriber`, beside the `sync` worker: for the profiles whose `sync.jobs`
  partition that worker owns (the member that runs them), subscribes each Graph mailbox
  with ``changeNotifications: true`` and renews its subscriptions a day before they
  expire. Graph keeps the subscriptions; nothing of ours is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.errors import BadRequest, NotFound, SwitchboardError
from switchboard.kafka import SYNC_PROFILES
from switchboard.keys import derive_key, parse_master_keys
from switchboard.services.http import JSON, read_body
from switchboard.services.runtime import Runtime
from switchboard.services.sync_connectors import ConnectorContext, build
from switchboard.services.sync_scheduler import partition_of
from switchboard.services.sync_webhooks import trigger
from switchboard.supervision import supervised
from switchboard.sync.errors import ConnectorError, RateLimited
from switchboard.sync.graph_subscriptions import (
    client_state,
    genuine,
    parse_notifications,
    parse_subscriptions,
    plan_subscriptions,
    renewal_body,
    resources,
    subscription_body,
)
from switchboard.sync.profiles import ProfileRecord, open_credentials

if TYPE_CHECKING:
    from switchboard.services.graph_connector import GraphConnector
    from switchboard.services.sync_api import SyncProfilesApi
    from switchboard.services.sync_worker import SyncWorker

log = logging.getLogger(__name__)

NOTIFY = "/api/v1/sync/graph/notifications/{profileId}"
# How often the subscriber looks for a profile due (a look at memory; Graph is called
# only for a profile whose subscriptions are missing, changed or about to expire).
TICK_S = 1.0
RETRY_MS = 60_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _keys(runtime: Runtime) -> list[bytes]:
    return [derive_key(k, "graph-notify")
            for k in parse_master_keys(runtime.settings.sealing_keys)]


def notification_url(runtime: Runtime, profile_id: str) -> str:
    return runtime.settings.public_url.rstrip("/") + NOTIFY.format(profileId=profile_id)


def watched(rec: ProfileRecord) -> bool:
    return (rec.mailbox.kind == "graph" and rec.connected
            and rec.mailbox.configuration.get("changeNotifications") is True)


class GraphNotificationsApi:
    def __init__(self, profiles: SyncProfilesApi) -> None:
        self.runtime = profiles.runtime
        self.store = profiles.store
        self._keys = _keys(self.runtime)

    def routes(self) -> list[Route]:
        return [Route(NOTIFY, self.notify, methods=["POST"])]

    async def notify(self, request: Request) -> Response:
        pid = request.path_params["profileId"]
        await self.store.sync()
        rec = self.store.profiles.profiles.get(pid)
        if (rec is None or rec.hub_id not in self.runtime.registry.view.hubs
                or rec.mailbox.kind != "graph"
                or rec.mailbox.configuration.get("changeNotifications") is not True):
            raise NotFound("sync_profile_not_found", "no such sync profile")
        token = request.query_params.get("validationToken")
        if token is not None:
            if not 0 < len(token) <= 1024:
                raise BadRequest("invalid_validation_token", "validationToken: 1 to 1024 "
                                 "characters", field="validationToken")
            return Response(token, 200, media_type="text/plain",
                            headers={"x-content-type-options": "nosniff"})
        body = await read_body(request, self.runtime.settings.max_body_bytes)
        try:
            notes = parse_notifications(body)
        except ValueError:
            raise BadRequest("invalid_notification", "not a Microsoft Graph change "
                             "notification ({value: [...]})") from None
        good = [n for n in notes if genuine(self._keys, pid, n)]
        if len(good) < len(notes):
            log.warning("graph notifications for %s: %d of %d without the profile's "
                        "clientState, ignored", pid, len(notes) - len(good), len(notes))
        if not good or not rec.connected:
            return JSON({"profileId": pid, "jobId": None, "coalesced": False,
                         "accepted": 0}, status_code=202)
        [out] = await trigger(self.runtime, self.store, [rec], "webhook")
        return JSON({**out, "accepted": len(good)}, status_code=202)


class GraphSubscriber:
    """Keeps the Graph subscriptions of the profiles its `sync` worker owns."""

    def __init__(self, worker: SyncWorker) -> None:
        self.worker = worker
        self.runtime = worker.runtime
        self._keys = _keys(self.runtime)
        # profile → (its updated_at when checked, when to check again): a changed
        # profile (modules, task list, notifications switched on) is checked at once.
        self._due: dict[str, tuple[int, int]] = {}
        self._owned: frozenset[int] = frozenset()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = supervised(self._loop(), name="graph-subscriptions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick(_now_ms())
            except asyncio.CancelledError:
                raise
            except SwitchboardError as exc:
                log.warning("graph subscriptions: %r; trying again", exc)

    async def tick(self, now: int) -> None:
        consumer = self.worker._consumer
        if consumer is None:
            return
        store = self.worker.store
        topic = store.jobs_topic
        owned = frozenset(tp.partition for tp in consumer.assignment() if tp.topic == topic)
        if owned != self._owned:
            await store.sync(SYNC_PROFILES)
            self._owned = owned
        partitions = consumer.partitions_for_topic(topic)
        if not owned or not partitions:
            return
        hubs = self.runtime.registry.view.hubs
        for pid, rec in list(store.profiles.profiles.items()):
            if (not watched(rec) or rec.hub_id not in hubs
                    or partition_of(pid, len(partitions)) not in owned):
                continue
            seen, due = self._due.get(pid, (-1, 0))
            if seen == rec.updated_at and due > now:
                continue
            try:
                due = await self.ensure(rec, now)
            except RateLimited as exc:
                due = now + int(max(exc.retry_after or 0, 60) * 1000)
                log.warning("graph subscriptions of %s: %s", pid, exc.description)
            except SwitchboardError as exc:
                due = now + RETRY_MS
                log.warning("graph subscriptions of %s: %s", pid, exc.description)
            self._due[pid] = (rec.updated_at, due)

    async def ensure(self, rec: ProfileRecord, now: int) -> int:
        """Create, renew and delete so the profile's collections are watched; when to
        look again."""
        pid = rec.profile_id
        creds = open_credentials(self.runtime.sealer, rec, "mailbox")
        conn: GraphConnector = build("graph", ConnectorContext(  # type: ignore[assignment]
            configuration=rec.mailbox.configuration, credentials=creds,
            settings=self.runtime.settings, http=self.runtime.http, runtime=self.runtime,
            rotate=functools.partial(self.worker.store.replace_credential, pid, "mailbox")))
        modules = {m for m, spec in rec.modules.items() if spec.enabled}
        if "tasks" in modules:
            await conn.tasks_path()  # the configured list, else the user's default one
        wanted = resources(modules, conn.task_list_id)
        url = notification_url(self.runtime, pid)
        answer = await conn.graph.call("GET", "/subscriptions")
        try:
            existing = parse_subscriptions(answer.content)
        except ValueError:
            raise ConnectorError("graph_bad_answer", "Graph's subscription list is not "
                                 "one") from None
        plan = plan_subscriptions(existing, wanted, url, now)
        state = client_state(self._keys[0], pid)
        for resource in plan.create:
            await conn.graph.call("POST", "/subscriptions",
                                  json=subscription_body(resource, url, state, now))
        for sub_id in plan.renew:
            await conn.graph.call("PATCH", f"/subscriptions/{sub_id}", json=renewal_body(now))
        for sub_id in plan.delete:
            await conn.graph.call("DELETE", f"/subscriptions/{sub_id}")
        if plan.create or plan.renew or plan.delete:
            log.info("graph subscriptions of %s: %d created, %d renewed, %d deleted", pid,
                     len(plan.create), len(plan.renew), len(plan.delete))
        return plan.next_check_ms


def openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    pid = {"name": "profileId", "in": "path", "required": True, "schema": {"type": "string"}}
    token = {"name": "validationToken", "in": "query", "required": False,
             "schema": {"type": "string"},
             "description": "Graph's subscription handshake: answered 200 text/plain with "
                            "the token"}
    return {
        NOTIFY: {
            "parameters": [pid, token],
            "post": op("Microsoft Graph's change notifications for a profile whose mailbox "
                       "has changeNotifications: those with the profile's clientState "
                       "trigger an incremental run, coalesced (202); others are ignored "
                       "(202, accepted 0)", ok=202, security=False,
                       responses=(400, 404, 413, 503)),
        },
    }
