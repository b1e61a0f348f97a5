"""Graph change notifications, pure parts: what is watched, the subscription bodies, the
create / renew / delete plan, the clientState, the notifications read and what a
lifecycle notification asks for."""

from __future__ import annotations

import orjson
import pytest

from switchboard.sync.graph_subscriptions import (
    LIFETIME_MS,
    RENEW_BEFORE_MS,
    LifecycleNotification,
    Notification,
    Subscription,
    client_state,
    genuine,
    parse_lifecycle,
    parse_notifications,
    parse_subscriptions,
    plan_lifecycle,
    plan_subscriptions,
    resources,
    subscription_body,
)

URL = "https://hub.example/api/v1/sync/graph/notifications/p1"
LIFE = "https://hub.example/api/v1/sync/graph/lifecycle/p1"
NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z
K1, K2 = b"1" * 32, b"2" * 32


def _iso(ms: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sub(sid: str, resource: str, expires_ms: int, url: str = URL,
        life: str | None = None) -> Subscription:
    # Graph answers 7 fractional digits and the resource without its slash.
    return Subscription(id=sid, resource=resource, notification_url=url,
                        expiration_date_time=_iso(expires_ms)[:-1] + "0000Z",
                        lifecycle_notification_url=life)


def test_resources_follow_the_enabled_modules() -> None:
    assert resources({"contacts", "calendar", "tasks", "email"}, "L1") == [
        "/me/contacts", "/me/events", "/me/messages", "/me/todo/lists/L1/tasks"]
    assert resources({"contacts", "accounts"}, None) == ["/me/contacts"]
    assert resources(set(), "L1") == []


def test_the_body_is_within_graphs_limit() -> None:
    body = subscription_body("/me/contacts", URL, "st", NOW)
    assert body["changeType"] == "created,updated,deleted"
    assert body["notificationUrl"] == URL and body["clientState"] == "st"
    assert body["expirationDateTime"] == _iso(NOW + LIFETIME_MS)
    assert LIFETIME_MS < 4230 * 60_000
    assert "lifecycleNotificationUrl" not in body
    assert subscription_body("/me/contacts", URL, "st", NOW, LIFE)[
        "lifecycleNotificationUrl"] == LIFE


def test_the_plan() -> None:
    wanted = ["/me/contacts", "/me/events"]
    # Nothing yet: both created, looked at again a day before they expire.
    plan = plan_subscriptions([], wanted, URL, NOW)
    assert (plan.create, plan.renew, plan.delete) == (wanted, [], [])
    assert plan.next_check_ms == NOW + LIFETIME_MS - RENEW_BEFORE_MS
    # Live and far from expiry: nothing to do; another URL's are not ours.
    fresh = [sub("a", "me/contacts", NOW + LIFETIME_MS),
             sub("b", "Me/Events", NOW + 2 * RENEW_BEFORE_MS),
             sub("x", "me/contacts", NOW + 1000, url="https://other/n")]
    plan = plan_subscriptions(fresh, wanted, URL, NOW)
    assert (plan.create, plan.renew, plan.delete) == ([], [], [])
    assert plan.next_check_ms == NOW + RENEW_BEFORE_MS
    # Within a day of expiry: renewed; expired: made again; a duplicate and a resource
    # no longer wanted: deleted.
    old = [sub("a", "me/contacts", NOW + RENEW_BEFORE_MS - 1),
           sub("a2", "me/contacts", NOW + 5000),
           sub("b", "me/events", NOW - 1),
           sub("c", "me/messages", NOW + LIFETIME_MS)]
    plan = plan_subscriptions(old, wanted, URL, NOW)
    assert plan.create == ["/me/events"] and plan.renew == ["a"]
    assert sorted(plan.delete) == ["a2", "c"]
    # Never sooner than a minute (a Graph that keeps failing is not hammered).
    assert plan_subscriptions([], [], URL, NOW).next_check_ms >= NOW + 60_000


def test_client_state_is_per_profile_and_checked_under_any_key() -> None:
    s1 = client_state(K1, "p1")
    assert s1 != client_state(K1, "p2") and s1 != client_state(K2, "p1")
    assert len(s1) <= 128
    assert genuine([K1], "p1", Notification(client_state=s1))
    assert genuine([K2, K1], "p1", Notification(client_state=s1))  # rotated key
    assert not genuine([K1], "p2", Notification(client_state=s1))
    assert not genuine([K1], "p1", Notification(client_state=None))
    assert not genuine([K1], "p1", Notification(client_state=s1[:-1]))


def test_parsing() -> None:
    body = orjson.dumps({"value": [{
        "subscriptionId": "s1", "subscriptionExpirationDateTime": "2027-01-16T00:00:00Z",
        "changeType": "created", "clientState": "st", "tenantId": "t",
        "resource": "Users/u/Contacts/c1", "resourceData": {"id": "c1"}}]})
    assert parse_notifications(body) == [Notification(
        subscription_id="s1", client_state="st", change_type="created",
        resource="Users/u/Contacts/c1")]
    for bad in (b"{}", b"[]", b"not json", b'{"value": 3}'):
        with pytest.raises(ValueError):
            parse_notifications(bad)
    subs = parse_subscriptions(orjson.dumps({"value": [{
        "id": "s1", "resource": "me/contacts", "notificationUrl": URL,
        "expirationDateTime": "2027-01-16T00:00:00Z", "changeType": "created"}]}))
    assert subs[0].id == "s1" and subs[0].notification_url == URL
    with pytest.raises(ValueError):
        parse_subscriptions(b"<html>")


def test_a_subscription_without_the_lifecycle_url_is_replaced() -> None:
    # Graph cannot add a lifecycleNotificationUrl to a subscription: one made before is
    # made anew (created, then the old one deleted); one with it is kept.
    subs = [sub("a", "me/contacts", NOW + LIFETIME_MS),
            sub("b", "me/events", NOW + LIFETIME_MS, life=LIFE),
            sub("c", "me/messages", NOW + LIFETIME_MS, life="https://old/l")]
    wanted = ["/me/contacts", "/me/events", "/me/messages"]
    plan = plan_subscriptions(subs, wanted, URL, NOW, lifecycle_url=LIFE)
    assert plan.create == ["/me/contacts", "/me/messages"] and plan.renew == []
    assert sorted(plan.delete) == ["a", "c"]
    # Without a lifecycle URL to want, nothing changes.
    assert plan_subscriptions(subs, wanted, URL, NOW).create == []


def life(event: str, state: str | None, sid: str = "s1") -> LifecycleNotification:
    return LifecycleNotification(subscription_id=sid, client_state=state,
                                 lifecycle_event=event)


def test_what_each_lifecycle_event_asks_for() -> None:
    good = client_state(K1, "p1")
    plan = plan_lifecycle([K1], "p1", [life("reauthorizationRequired", good, "s1"),
                                       life("reauthorizationRequired", good, "s2"),
                                       life("reauthorizationRequired", good, "s1")])
    assert (plan.reauthorize, plan.resubscribe, plan.run) == (["s1", "s2"], False, False)
    assert (plan.accepted, plan.ignored) == (3, 0)
    # Removed: subscribed again, and a run for what changed while nobody was told.
    plan = plan_lifecycle([K1], "p1", [life("subscriptionRemoved", good)])
    assert (plan.reauthorize, plan.resubscribe, plan.run) == ([], True, True)
    # Missed: a run only.
    plan = plan_lifecycle([K1], "p1", [life("missed", good)])
    assert (plan.reauthorize, plan.resubscribe, plan.run) == ([], False, True)
    # Under an older key still held: genuine.
    assert plan_lifecycle([K2, K1], "p1", [life("missed", good)]).run


def test_forged_or_unknown_lifecycle_notifications_do_nothing() -> None:
    good = client_state(K1, "p1")
    notes = [life("subscriptionRemoved", "guess"), life("missed", None),
             life("reauthorizationRequired", client_state(K1, "p2")),
             life("somethingNew", good), life("reauthorizationRequired", good, sid="")]
    plan = plan_lifecycle([K1], "p1", notes)
    assert (plan.reauthorize, plan.resubscribe, plan.run) == ([], False, False)
    assert (plan.accepted, plan.ignored) == (0, 5)
    assert plan_lifecycle([K1], "p1", []).accepted == 0


def test_parsing_lifecycle_notifications() -> None:
    # Microsoft's documented shape: no resource, a lifecycleEvent instead of changeType.
    body = orjson.dumps({"value": [{
        "lifecycleEvent": "subscriptionRemoved", "subscriptionId": "s1",
        "subscriptionExpirationDateTime": "2027-01-16T00:00:00.0000000Z",
        "clientState": "st", "tenantId": "t"}]})
    assert parse_lifecycle(body) == [LifecycleNotification(
        subscription_id="s1", client_state="st", lifecycle_event="subscriptionRemoved",
        subscription_expiration_date_time="2027-01-16T00:00:00.0000000Z")]
    for bad in (b"{}", b"not json", b'{"value": [1]}'):
        with pytest.raises(ValueError):
            parse_lifecycle(bad)
