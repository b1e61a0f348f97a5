"""Signup's apiHash and replay rules, templates' locked fields, `sync:*` events (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from switchboard.channels import EVENT_FILTERS
from switchboard.channels import SYNC_EVENT_FILTERS as CHANNEL_SYNC_FILTERS
from switchboard.errors import Conflict, Unauthorized
from switchboard.sync.events import SYNC_EVENT_FILTERS, conversation_of, sync_event
from switchboard.sync.options import ModuleOptions
from switchboard.sync.profiles import (
    ConnectorSpec,
    ModuleCounts,
    ModuleSpec,
    ProfileRecord,
    RunJob,
    StatusRecord,
)
from switchboard.sync.schedule import Schedule
from switchboard.sync.signup import (
    SignupRequest,
    api_hash,
    check_signup,
    personalise,
    user_key,
)
from switchboard.sync.templates import TemplateRecord, apply_locked, locked_in

NOW = 1_750_000_000_000
SECRET = "s3cret"
WINDOW = 300_000


def req(ts: int = NOW, secret: str = SECRET, **kw: str) -> SignupRequest:
    org, user = kw.get("org", "c1647588"), kw.get("user", "u886450")
    return SignupRequest(app_id="app", comp_ext_id=org, user_ext_id=user,
                         api_hash=kw.get("hash", api_hash(secret, org, user, ts)),
                         request_timestamp=ts, instance_url="https://api.example.test")


def test_api_hash_is_the_seeds_java_sample() -> None:
    # The seed's Java: Base64(HmacSHA256(secret, "OrgId:UserId:" + timestamp)), the ids
    # filled in; computed here independently.
    want = base64.b64encode(hmac.new(b"k", b"c1:u1:1700000000000", hashlib.sha256).digest())
    assert api_hash("k", "c1", "u1", 1_700_000_000_000) == want.decode()


def test_a_good_signup_passes_and_each_fault_has_its_own_answer() -> None:
    check_signup(req(), "s3cret", now_ms=NOW + 1000, window_ms=WINDOW, last_ts=None)
    with pytest.raises(Unauthorized) as err:
        check_signup(req(), "other", now_ms=NOW, window_ms=WINDOW, last_ts=None)
    assert err.value.code == "invalid_api_hash"
    # The hash binds the user: another user's ids under the same hash fail.
    forged = req(hash=api_hash("s3cret", "c1647588", "u1", NOW))
    with pytest.raises(Unauthorized):
        check_signup(forged, "s3cret", now_ms=NOW, window_ms=WINDOW, last_ts=None)
    for ts in (NOW - WINDOW - 1, NOW + WINDOW + 1):
        with pytest.raises(Unauthorized) as err:
            check_signup(req(ts), "s3cret", now_ms=NOW, window_ms=WINDOW, last_ts=None)
        assert err.value.code == "stale_timestamp"
    with pytest.raises(Conflict):  # the same signup again
        check_signup(req(), "s3cret", now_ms=NOW, window_ms=WINDOW, last_ts=NOW)
    check_signup(req(NOW + 1), "s3cret", now_ms=NOW, window_ms=WINDOW, last_ts=NOW)


def test_personalise_and_user_keys() -> None:
    conf = personalise({"url": "{instanceUrl}/v2", "n": 3, "who": "{userExtId}@{compExtId}"},
                       req())
    assert conf == {"url": "https://api.example.test/v2", "n": 3, "who": "u886450@c1647588"}
    assert user_key("h", "a:b", "c") != user_key("h", "a", "b:c")


def spec(kind: str = "testfile", **conf: str) -> ConnectorSpec:
    return ConnectorSpec(kind=kind, configuration=dict(conf))


def test_locked_fields_name_what_a_change_touches() -> None:
    assert locked_in(["portal"], name=True) is None
    assert locked_in(["portal"], portal=True) == "portal"
    assert locked_in(["modules"], modules=["tasks"]) == "modules.tasks"
    assert locked_in(["modules.contacts"], modules=["tasks"]) is None
    assert locked_in(["modules.contacts"], modules=["contacts"]) == "modules.contacts"
    assert locked_in(["schedule"], schedule=True) == "schedule"


def test_a_template_change_reaches_locked_fields_only() -> None:
    profile = ProfileRecord(
        profile_id="p", hub_id="h", name="mine", portal=spec(path="a"), mailbox=spec(path="b"),
        modules={"contacts": ModuleSpec(need_review=False),
                 "tasks": ModuleSpec(options=ModuleOptions(direction="TO_PORTAL"))},
        created_at=1, updated_at=1)
    tpl = TemplateRecord(
        template_id="t", hub_id="h", name="tpl", portal=spec(path="A"), mailbox=spec(path="B"),
        modules={"contacts": ModuleSpec(options=ModuleOptions(direction="FROM_PORTAL"))},
        created_at=1, updated_at=2, schedule=Schedule(interval_type=1, interval=2),
        locked_fields=["portal", "modules.contacts", "schedule"])
    new = apply_locked(profile, tpl, portal=spec(path="A2"), mailbox=spec(path="B2"), now=5)
    assert new.portal.configuration == {"path": "A2"} and new.mailbox == profile.mailbox
    assert new.name == "mine"
    assert new.modules["contacts"].options.direction == "FROM_PORTAL"
    assert new.modules["contacts"].need_review is False
    assert new.modules["tasks"] == profile.modules["tasks"]  # unlocked: the profile's own
    assert new.schedule == tpl.schedule and new.schedule_set_at == 5 and new.updated_at == 5
    # Applying again changes nothing.
    assert apply_locked(new, tpl, portal=new.portal, mailbox=new.mailbox, now=9) is new


def test_sync_events_have_one_id_per_run_and_transition_and_are_filterable() -> None:
    assert SYNC_EVENT_FILTERS == CHANNEL_SYNC_FILTERS and SYNC_EVENT_FILTERS <= EVENT_FILTERS
    job = RunJob(job_id="j", profile_id="p", hub_id="h", requested_at=1, origin="schedule",
                 slot=60_000)
    status = StatusRecord(profile_id="p", hub_id="h", sync_state="IDLE", err_message="boom",
                          err_svc_id="mailbox", modules={"contacts": ModuleCounts(created=2)})
    a = sync_event("failed", job, status, profile_name="x", now_ms=5)
    b = sync_event("failed", job, status, profile_name="x", now_ms=9)
    c = sync_event("finished", job, status, profile_name="x", now_ms=5)
    assert a.activity_id == b.activity_id != c.activity_id
    assert a.type == "sync:failed" and a.conversation_id == conversation_of("p")
    assert a.event is not None and a.event.data["errSvcId"] == "mailbox"
    assert a.event.data["modules"]["contacts"]["created"] == 2
    assert a.event.data["slot"] == 60_000 and a.event.data["origin"] == "schedule"
    started = sync_event("started", job, status, profile_name="x", now_ms=5)
    assert started.event is not None and "modules" not in started.event.data


def test_pending_means_requested_and_not_taken() -> None:
    s = StatusRecord(profile_id="p", hub_id="h")
    assert not s.pending()
    assert StatusRecord(profile_id="p", hub_id="h", job_id="j").pending()
    assert not StatusRecord(profile_id="p", hub_id="h", job_id="j",
                            running_job_id="j").pending()
    assert not StatusRecord(profile_id="p", hub_id="h", job_id="j", last_job_id="j").pending()
