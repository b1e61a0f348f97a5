"""Graph change notifications (pure parts in `switchboard.sync.graph_subscriptions`;
the subscriptions' I/O in `graph_subscribe`, lifecycle notifications in `graph_lifecycle`).

- ``POST /api/v1/sync/graph/notifications/{profileId}`` (public: Graph posts here):
  ``?validationToken=`` is Graph's handshake, answered 200 text/plain with the token;
  a notification whose clientState is the profile's triggers a coalesced incremental run
  (`sync_webhooks.trigger`), 202. One with a wrong or missing clientState is 202 too and
  ignored (logged): Microsoft says to discard it, and an error would only make Graph
  retry it or tell a forger what we check.
- `GraphSubscriber`, beside the `sync` worker: for the profiles whose `sync.jobs`
  partition that worker owns (the member that runs them), subscribes each Graph mailbox
  with ``changeNotifications: true`` (with a ``lifecycleNotificationUrl``) and renews its
  subscriptions a day before they expire. Graph keeps the subscriptions; nothing of ours
  is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.clock import now_ms
from switchboard.errors import BadRequest, NotFound, SwitchboardError
from switchboard.kafka import SYNC_PROFILES
from switchboard.services import graph_lifecycle
from switchboard.services.graph_lifecycle import GraphLifecycle
from switchboard.services.graph_subscribe import (
    LIFECYCLE,
    NOTIFY,
    notification_url,
    notify_keys,
    subscribe,
    watched,
)
from switchboard.services.http import JSON, read_body
from switchboard.services.sync_scheduler import partition_of
from switchboard.services.sync_webhooks import trigger
from switchboard.supervision import supervised
from switchboard.sync.errors import RateLimited
from switchboard.sync.graph_subscriptions import genuine, parse_notifications
from switchboard.sync.profiles import ProfileRecord

if TYPE_CHECKING:
    from switchboard.services.sync_api import SyncProfilesApi
    from switchboard.services.sync_worker import SyncWorker

log = logging.getLogger(__name__)

__all__ = ["LIFECYCLE", "NOTIFY", "GraphNotificationsApi", "GraphSubscriber",
           "notification_url", "openapi_paths", "watched"]
# How often the subscriber looks for a profile due (a look at memory; Graph is called
# only for a profile whose subscriptions are missing, changed or about to expire).
TICK_S = 1.0
RETRY_MS = 60_000


class GraphNotificationsApi:
    def __init__(self, profiles: SyncProfilesApi) -> None:
        self.runtime = profiles.runtime
        self.store = profiles.store
        self._keys = notify_keys(self.runtime)
        self.lifecycle = GraphLifecycle(self)

    def routes(self) -> list[Route]:
        return [Route(NOTIFY, self.notify, methods=["POST"]),
                Route(LIFECYCLE, self.notify_lifecycle, methods=["POST"])]

    async def _profile(self, request: Request) -> ProfileRecord:
        await self.store.sync()
        rec = self.store.profiles.profiles.get(request.path_params["profileId"])
        if (rec is None or rec.hub_id not in self.runtime.registry.view.hubs
                or rec.mailbox.kind != "graph"
                or rec.mailbox.configuration.get("changeNotifications") is not True):
            raise NotFound("sync_profile_not_found", "no such sync profile")
        return rec

    @staticmethod
    def _handshake(request: Request) -> Response | None:
        """Graph's validation request (both URLs get one when a subscription is made)."""
        token = request.query_params.get("validationToken")
        if token is None:
            return None
        if not 0 < len(token) <= 1024:
            raise BadRequest("invalid_validation_token", "validationToken: 1 to 1024 "
                             "characters", field="validationToken")
        return Response(token, 200, media_type="text/plain",
                        headers={"x-content-type-options": "nosniff"})

    async def notify_lifecycle(self, request: Request) -> Response:
        rec = await self._profile(request)
        shake = self._handshake(request)
        return shake if shake is not None else await self.lifecycle.notify(request, rec)

    async def notify(self, request: Request) -> Response:
        rec = await self._profile(request)
        pid = rec.profile_id
        shake = self._handshake(request)
        if shake is not None:
            return shake
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
                await self.tick(now_ms())
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
        rotate = functools.partial(self.worker.store.replace_credential, rec.profile_id,
                                   "mailbox")
        return await subscribe(self.runtime, rec, rotate, now)


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
        LIFECYCLE: graph_lifecycle.openapi_path(op, pid, token),
    }
