"""Seed 000's flat syncSettings to and from a profile's modules."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.errors import BadRequest
from switchboard.sync.options import Direction, SideFilter
from switchboard.sync.profiles import Module, ModuleSpec
from switchboard.sync.seed_settings import SEED_KEYS, from_seed, graph_window, to_seed

# Seed 000's example (its user-level and template syncSettings), every key and value.
SEED: dict[str, Any] = {
    "logEmail": True, "emailSkipDomains": "acme.com,example.org",
    "emailFetchAttachments": False, "emailCreateLeads": True, "emailCreateContacts": True,
    "emailAutoDetectDeal": False, "emailCreateCompany": True,
    "syncCalendar": True, "calSyncDirection": "TO_PORTAL", "calSyncPrivate": False,
    "calFetchAttachments": False, "calMailboxSyncAll": False,
    "calMailboxSyncTags": "CRM,Clients", "calMailboxSyncMeetingsOnly": True,
    "calPastWeeks": 2, "calFutureWeeks": 10,
    "syncContacts": True, "contSyncDirection": "BOTH", "contCreateCompany": False,
    "contPortalSyncAll": False, "contMailboxSyncAll": False, "contPortalSyncMine": True,
    "contPortalSyncTags": "vip", "contMailboxSyncTags": "CRM", "contMailboxSyncDeleted": True,
    "syncTasks": False, "taskSyncDirection": "FROM_PORTAL", "taskMailboxSyncAll": True,
    "taskMailboxSyncTags": "",
}


def test_the_seed_keys_are_ours() -> None:
    assert sorted(SEED_KEYS) == sorted(SEED)


def test_round_trip() -> None:
    modules = from_seed(SEED, {})
    assert to_seed(modules) == SEED
    on = from_seed({**SEED, "emailFetchAttachments": True}, {})
    assert on["email"].options.email.fetch_attachments is True
    assert to_seed(on)["emailFetchAttachments"] is True
    on = from_seed({**SEED, "calFetchAttachments": True, "contCreateCompany": True}, {})
    assert on["calendar"].options.fetch_attachments is True
    assert on["contacts"].options.create_company is True
    assert to_seed(on)["calFetchAttachments"] is True
    assert to_seed(on)["contCreateCompany"] is True
    contacts = modules["contacts"].options
    assert contacts.portal_filter == SideFilter(sync_all=False, sync_tags=("vip",))
    assert contacts.mailbox_deletes is True
    cal = modules["calendar"].options
    assert (cal.direction, cal.sync_private, cal.meetings_only) == (
        Direction.TO_PORTAL, False, True)
    assert cal.mailbox_filter.sync_tags == ("CRM", "Clients")
    assert graph_window(cal) == {"pastDays": 14, "futureDays": 70}
    assert modules["email"].options.email.skip_domains == ("acme.com", "example.org")
    assert modules["tasks"].enabled is False


def test_partial_update_keeps_the_rest_and_touches_only_named_modules() -> None:
    old: dict[Module, ModuleSpec] = {"contacts": ModuleSpec(need_review=False)}
    new = from_seed({"contMailboxSyncTags": " a , b,"}, old)
    assert list(new) == ["contacts"]
    assert new["contacts"].need_review is False and new["contacts"].enabled
    assert new["contacts"].options.mailbox_filter.sync_tags == ("a", "b")
    # A key of a module the profile lacks adds it, off.
    assert from_seed({"calSyncPrivate": False}, old)["calendar"].enabled is False
    assert to_seed({})["syncContacts"] is False
    assert to_seed({})["calPastWeeks"] is None


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"contSyncTags": "x"}, "unknown_setting", "contSyncTags"),
    ({"syncContacts": "yes"}, "invalid_setting", "syncContacts"),
    ({"contSyncDirection": "SIDEWAYS"}, "invalid_setting", "contSyncDirection"),
    ({"calSyncDirection": ["BOTH"]}, "invalid_setting", "calSyncDirection"),
    ({"calPastWeeks": -1}, "invalid_setting", "calPastWeeks"),
    ({"calFutureWeeks": True}, "invalid_setting", "calFutureWeeks"),
    ({"contPortalSyncTags": 5}, "invalid_setting", "contPortalSyncTags"),
    ({"contPortalSyncMine": False}, "unsupported_setting", "contPortalSyncMine"),
    ({"calFetchAttachments": "yes"}, "invalid_setting", "calFetchAttachments"),
    ({"emailFetchAttachments": "yes"}, "invalid_setting", "emailFetchAttachments"),
    ({"contCreateCompany": 1}, "invalid_setting", "contCreateCompany"),
])
def test_bad_settings_are_400_naming_the_key(body: dict[str, Any], code: str,
                                             field: str) -> None:
    with pytest.raises(BadRequest) as err:
        from_seed(body, {})
    assert err.value.code == code and err.value.field == field
