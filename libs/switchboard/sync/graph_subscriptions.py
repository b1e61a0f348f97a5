"""Microsoft Graph change notifications for a mailbox side (pure: what to subscribe to,
the subscription bodies, what to create, renew or delete, the per-profile clientState,
the notifications Graph posts, and what to do about a lifecycle notification).

A profile whose mailbox is `graph` with ``changeNotifications: true`` is subscribed to
created, updated and deleted items of the collections its enabled modules read; each
notification triggers a coalesced incremental run (the run reads the changes through the
delta links, so a notification's content is not needed, only that it is genuine).

The clientState is an HMAC of the profile id under a key derived from the deployment's
master key: nothing to store, and any replica checks it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
from msgspec import Struct

__all__ = [
    "CHANGE_TYPES",
    "LIFETIME_MS",
    "RENEW_BEFORE_MS",
    "LifecycleNotification",
    "LifecyclePlan",
    "Notification",
    "Subscription",
    "SubscriptionPlan",
    "client_state",
    "genuine",
    "parse_lifecycle",
    "parse_notifications",
    "parse_subscriptions",
    "plan_lifecycle",
    "plan_subscriptions",
    "renewal_body",
    "resources",
    "subscription_body",
]

CHANGE_TYPES = "created,updated,deleted"
# Graph's longest subscription for Outlook items and To Do tasks is 4,230 minutes; a
# little less leaves room for clock skew.
LIFETIME_MS = 4200 * 60 * 1000
# Renewed a day before it expires: a worker that is down or a Graph that is busy for
# hours still renews in time.
RENEW_BEFORE_MS = 24 * 3600 * 1000
# Module → the collection whose changes it reads.
_RESOURCES = {"contacts": "/me/contacts", "calendar": "/me/events",
              "email": "/me/messages"}


class Subscription(Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    resource: str = ""
    notification_url: str = ""
    expiration_date_time: str = ""
    change_type: str = ""
    lifecycle_notification_url: str | None = None


class _Subscriptions(Struct):
    value: list[Subscription] = []


class Notification(Struct, frozen=True, kw_only=True, rename="camel"):
    subscription_id: str = ""
    client_state: str | None = None
    change_type: str = ""
    resource: str = ""


class _Notifications(Struct):
    value: list[Notification]


class LifecycleNotification(Struct, frozen=True, kw_only=True, rename="camel"):
    """What Graph posts to a subscription's lifecycleNotificationUrl: no resource data,
    only which subscription and what happened to it."""
    subscription_id: str = ""
    client_state: str | None = None
    lifecycle_event: str = ""
    subscription_expiration_date_time: str = ""


class _Lifecycle(Struct):
    value: list[LifecycleNotification]


class LifecyclePlan(Struct, frozen=True, kw_only=True):
    reauthorize: list[str]  # subscription ids
    resubscribe: bool  # a subscription was removed: make the missing ones again
    run: bool  # changes may not have been notified: an incremental run
    accepted: int  # genuine notifications of an event we act on
    ignored: int  # without the profile's clientState, or an event we do not know


class SubscriptionPlan(Struct, frozen=True, kw_only=True):
    create: list[str]  # resources
    renew: list[str]  # subscription ids
    delete: list[str]  # subscription ids (ours, for a resource no longer wanted)
    next_check_ms: int  # when the plan is to be made again


_subs = msgspec.json.Decoder(_Subscriptions)
_notes = msgspec.json.Decoder(_Notifications)
_lifecycle = msgspec.json.Decoder(_Lifecycle)


def resources(modules: Collection[str], task_list_id: str | None) -> list[str]:
    """The collections to watch for these enabled modules (tasks: the list the run syncs)."""
    out = [_RESOURCES[m] for m in ("contacts", "calendar", "email") if m in modules]
    if "tasks" in modules and task_list_id:
        out.append(f"/me/todo/lists/{task_list_id}/tasks")
    return out


def _iso(ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ms(text: str) -> int:
    """Graph's time (7 fractional digits at most, Z) in ms; 0 if unreadable (renew)."""
    head, dot, frac = text.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(head).replace(tzinfo=UTC)
    except ValueError:
        return 0
    return int(moment.timestamp() * 1000) + (int(frac[:3].ljust(3, "0")) if dot else 0)


def client_state(key: bytes, profile_id: str) -> str:
    """The profile's clientState (Graph allows 128 characters; this is 43)."""
    mac = hmac.new(key, b"graph-client-state:" + profile_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def genuine(keys: Sequence[bytes], profile_id: str,
            note: Notification | LifecycleNotification) -> bool:
    """Whether a notification carries the profile's clientState (constant time; any key
    still held, for subscriptions made before a key rotation)."""
    got = (note.client_state or "").encode()
    return any(hmac.compare_digest(client_state(k, profile_id).encode(), got) for k in keys)


def subscription_body(resource: str, notification_url: str, state: str,
                      now_ms: int, lifecycle_url: str | None = None) -> dict[str, str]:
    body = {"changeType": CHANGE_TYPES, "notificationUrl": notification_url,
            "resource": resource, "expirationDateTime": _iso(now_ms + LIFETIME_MS),
            "clientState": state}
    if lifecycle_url is not None:
        body["lifecycleNotificationUrl"] = lifecycle_url
    return body


def renewal_body(now_ms: int) -> dict[str, str]:
    return {"expirationDateTime": _iso(now_ms + LIFETIME_MS)}


def parse_subscriptions(content: bytes) -> list[Subscription]:
    """``GET /subscriptions``'s answer (ValueError if it is not one)."""
    try:
        return _subs.decode(content).value
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a subscription list: {exc}") from None


def parse_notifications(content: bytes) -> list[Notification]:
    """A notification post's items (ValueError if it is not Graph's shape)."""
    try:
        return _notes.decode(content).value
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a change notification: {exc}") from None


def parse_lifecycle(content: bytes) -> list[LifecycleNotification]:
    """A lifecycle notification post's items (ValueError if it is not Graph's shape)."""
    try:
        return _lifecycle.decode(content).value
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a lifecycle notification: {exc}") from None


def plan_lifecycle(keys: Sequence[bytes], profile_id: str,
                   notes: Sequence[LifecycleNotification]) -> LifecyclePlan:
    """What Microsoft asks of a subscriber for each lifecycle event, for the genuine
    notifications only: ``reauthorizationRequired`` → reauthorize that subscription;
    ``subscriptionRemoved`` → subscribe again, then an incremental run (changes made
    while no subscription existed were notified to nobody); ``missed`` → an incremental
    run (the delta links find what the lost notifications were about)."""
    reauthorize: list[str] = []
    resubscribe = run = False
    accepted = 0
    for note in notes:
        if not genuine(keys, profile_id, note):
            continue
        event = note.lifecycle_event
        if event == "reauthorizationRequired" and note.subscription_id:
            if note.subscription_id not in reauthorize:
                reauthorize.append(note.subscription_id)
        elif event == "subscriptionRemoved":
            resubscribe = run = True
        elif event == "missed":
            run = True
        else:
            continue
        accepted += 1
    return LifecyclePlan(reauthorize=reauthorize, resubscribe=resubscribe, run=run,
                         accepted=accepted, ignored=len(notes) - accepted)


def _same(a: str, b: str) -> bool:
    # Graph answers resources without the leading slash and in its own case ("me/contacts").
    return a.strip("/").lower() == b.strip("/").lower()


def plan_subscriptions(existing: Sequence[Subscription], wanted: Sequence[str],
                       notification_url: str, now_ms: int,
                       lifecycle_url: str | None = None) -> SubscriptionPlan:
    """What to do so that each wanted resource has one live subscription to this
    notification URL; another URL's subscriptions (another profile's, another app's) are
    not ours and left alone. With `lifecycle_url`, one of ours without it is replaced
    (Graph cannot add it to a subscription: made anew, then the old one deleted)."""
    ours = [s for s in existing if s.notification_url == notification_url]
    create, renew, delete = [], [], []
    expiries = []
    for resource in wanted:
        mine = [s for s in ours if _same(s.resource, resource)]
        live = [s for s in mine if _ms(s.expiration_date_time) > now_ms]
        if lifecycle_url is not None:
            delete += [s.id for s in live if s.lifecycle_notification_url != lifecycle_url]
            live = [s for s in live if s.lifecycle_notification_url == lifecycle_url]
        if not live:
            create.append(resource)
            expiries.append(now_ms + LIFETIME_MS)
            continue
        keep, *extra = sorted(live, key=lambda s: _ms(s.expiration_date_time), reverse=True)
        delete += [s.id for s in extra]
        expires = _ms(keep.expiration_date_time)
        if expires - now_ms <= RENEW_BEFORE_MS:
            renew.append(keep.id)
            expires = now_ms + LIFETIME_MS
        expiries.append(expires)
    delete += [s.id for s in ours if not any(_same(s.resource, r) for r in wanted)]
    soonest = min(expiries, default=now_ms + LIFETIME_MS)
    return SubscriptionPlan(create=create, renew=renew, delete=delete,
                            next_check_ms=max(now_ms + 60_000, soonest - RENEW_BEFORE_MS))
