"""Graph's lifecycle notifications (pure decision: `switchboard.sync.graph_subscriptions.
plan_lifecycle`).

``POST /api/v1/sync/graph/lifecycle/{profileId}`` is the ``lifecycleNotificationUrl`` of
every subscription the worker makes (`graph_subscribe`). Like the change-notification
route it answers Graph's ``?validationToken=`` handshake and ignores (202, accepted 0)
notifications without the profile's clientState. For genuine ones:

- ``reauthorizationRequired``: ``POST /subscriptions/{id}/reauthorize``; a subscription
  Graph no longer has (404) is made again instead;
- ``subscriptionRemoved``: the profile's subscriptions are made again, then an
  incremental run (changes made meanwhile were notified to nobody);
- ``missed``: an incremental run, coalesced like a change notification's.

The answer is 202 at once and the Graph calls happen after it: Microsoft wants an answer
within seconds, and making a subscription waits on Graph's own handshake with this hub.
Each call (a reauthorize, the subscribing, the run's request) that fails for a passing
reason (Graph's 429 or 5xx, no answer, the broker unreachable) is tried again on
``SWITCHBOARD_GRAPH_LIFECYCLE_RETRY_SCHEDULE`` within ``…_RETRY_MAX_S``, Graph's
Retry-After honoured (the decision, pure: `switchboard.sync.graph_retry.next_step`); what
was done already is not done again. What is given up, or lost with a process that stops
meanwhile, is caught up by the worker's next look at the profile (its subscriptions) and
the next notification or schedule (its changes).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from switchboard import clock
from switchboard.errors import BadRequest, SwitchboardError, Unavailable
from switchboard.retry import RetryPolicy
from switchboard.services.graph_http import GraphServerError, GraphUnavailable
from switchboard.services.graph_subscribe import notify_keys, reauthorize, subscribe
from switchboard.services.http import JSON, read_body
from switchboard.services.sync_webhooks import trigger
from switchboard.sync.errors import RecordNotFound
from switchboard.sync.graph_retry import Failure, next_step
from switchboard.sync.graph_subscriptions import LifecyclePlan, parse_lifecycle, plan_lifecycle
from switchboard.sync.profiles import ProfileRecord

if TYPE_CHECKING:
    from switchboard.services.graph_notifications import GraphNotificationsApi

log = logging.getLogger(__name__)

T = TypeVar("T")


def failure_of(exc: SwitchboardError) -> Failure:
    """How a call failed, for `next_step`: passing or not, and Graph's Retry-After."""
    if isinstance(exc, GraphUnavailable):
        return Failure(passing=True, retry_after_s=exc.advised_s)
    return Failure(passing=isinstance(exc, GraphServerError | Unavailable))


class GraphLifecycle:
    """The lifecycle route's handler and the work it leaves running after answering."""

    def __init__(self, api: GraphNotificationsApi) -> None:
        self.api = api
        self.runtime = api.runtime
        self.store = api.store
        self._keys = notify_keys(self.runtime)
        self._tasks: set[asyncio.Task[None]] = set()
        # One profile's lifecycle work at a time: two subscriptionRemoved for its
        # collections would otherwise both make the missing ones.
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopping = False
        settings = self.runtime.settings
        self._policy = RetryPolicy.parse(settings.graph_lifecycle_retry_schedule)
        self._max_s = settings.graph_lifecycle_retry_max_s
        self.runtime.on_stop(self.stop)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def notify(self, request: Request, rec: ProfileRecord) -> Response:
        pid = rec.profile_id
        body = await read_body(request, self.runtime.settings.max_body_bytes)
        try:
            notes = parse_lifecycle(body)
        except ValueError:
            raise BadRequest("invalid_notification", "not a Microsoft Graph lifecycle "
                             "notification ({value: [...]})") from None
        plan = plan_lifecycle(self._keys, pid, notes)
        if plan.ignored:
            log.warning("graph lifecycle notifications for %s: %d of %d forged or of an "
                        "unknown event, ignored", pid, plan.ignored, len(notes))
        if plan.accepted and rec.connected and not self._stopping:
            task = asyncio.create_task(self._act(pid, plan), name=f"graph-lifecycle-{pid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSON({"profileId": pid, "accepted": plan.accepted}, status_code=202)

    async def _act(self, pid: str, plan: LifecyclePlan) -> None:
        async with self._locks.setdefault(pid, asyncio.Lock()):
            try:
                await self._apply(pid, plan)
            except SwitchboardError as exc:
                # The worker's next look at the profile makes what is missing.
                log.warning("graph lifecycle of %s: %s", pid, exc.description)

    async def _apply(self, pid: str, plan: LifecyclePlan) -> None:
        await self.store.sync()
        rec = self.store.profiles.profiles.get(pid)
        if rec is None or not rec.connected:
            return
        rotate = functools.partial(self.store.replace_credential, pid, "mailbox")
        resubscribe = plan.resubscribe
        for sub_id in plan.reauthorize:
            try:
                await self._retried(pid, f"reauthorize {sub_id}", functools.partial(
                    reauthorize, self.runtime, rec, rotate, sub_id))
                log.info("graph subscription %s of %s reauthorized", sub_id, pid)
            except RecordNotFound:
                resubscribe = True  # gone already: made again below
        if resubscribe:
            await self._retried(pid, "subscribe", lambda: subscribe(
                self.runtime, rec, rotate, clock.now_ms()))
        if plan.run:
            outs = await self._retried(pid, "run", functools.partial(
                trigger, self.runtime, self.store, [rec], "webhook"))
            for out in outs:
                log.info("graph lifecycle of %s: run %s", pid, out["jobId"])

    async def _retried(self, pid: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call`, tried again while `next_step` says so; its last failure raised."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except SwitchboardError as exc:
                step = next_step(self._policy, attempt, failure_of(exc),
                                 time.monotonic() - started, self._max_s)
                if not step.again:
                    if step.why != "permanent":
                        log.warning("graph lifecycle of %s: %s given up after %d attempts "
                                    "(%s)", pid, what, attempt, step.why)
                    raise
                log.warning("graph lifecycle of %s: %s failed (attempt %d: %s); again in "
                            "%.1f s", pid, what, attempt, exc.description, step.wait_s)
            await asyncio.sleep(step.wait_s)


def openapi_path(op: Any, pid: dict[str, Any], token: dict[str, Any]) -> dict[str, Any]:
    return {
        "parameters": [pid, token],
        "post": op("Microsoft Graph's lifecycle notifications for a profile whose mailbox "
                   "has changeNotifications (the subscriptions' lifecycleNotificationUrl): "
                   "with the profile's clientState, reauthorizationRequired reauthorizes "
                   "the subscription, subscriptionRemoved subscribes again and runs, "
                   "missed runs (incremental, coalesced); 202 {profileId, accepted}, "
                   "others ignored (accepted 0)", ok=202, security=False,
                   responses=(400, 404, 413, 503)),
    }
