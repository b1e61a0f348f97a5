"""The pure parts of runs: references translated through the pairs, e-mail logging's
decisions, the progress ETA, and the real connector kinds' configuration checks."""

from __future__ import annotations

import msgspec
import pytest

from switchboard.errors import BadRequest
from switchboard.sync import connector_config as cc
from switchboard.sync.connector import Capability
from switchboard.sync.email_log import (
    addresses,
    decide,
    log_key,
    log_record,
    logged_pair,
    new_account,
    new_contact,
    plan_emails,
)
from switchboard.sync.fingerprint import fingerprint, value_hash
from switchboard.sync.ops import Create, Update, Watermark
from switchboard.sync.options import EmailLogOptions, FieldMap, ModuleOptions
from switchboard.sync.pairs import Pair, PairIndex, PairSide
from switchboard.sync.plan import Changes, plan
from switchboard.sync.progress import progress
from switchboard.sync.records import Contact, EmailLog, OpportunityRef
from switchboard.sync.references import (
    MODULE_ORDER,
    to_portal_space,
    to_side,
    unsynced,
)

MAPS = (FieldMap("email", "email"), FieldMap("account_id", "account_id"))


def accounts(*pairs: tuple[str, str], dead: str | None = None) -> PairIndex:
    return PairIndex(Pair(kind="account", portal=PairSide(id=p),
                          mailbox=PairSide(id=m, deleted=m == dead)) for p, m in pairs)


# References ---------------------------------------------------------------------------

def test_a_mailbox_reference_becomes_the_paired_portal_id_or_is_left_out() -> None:
    idx = {"account": accounts(("P1", "M1"), ("P2", "M2"))}
    recs = [Contact(id="c1", modified_at=1, account_id="M2"),
            Contact(id="c2", modified_at=1, account_id="M9"),
            Contact(id="c3", modified_at=1)]
    out = to_portal_space("contact", recs, MAPS, idx)
    assert [c.account_id for c in out if isinstance(c, Contact)] == ["P2", None, None]
    # Without the reference mapped, records pass unchanged.
    assert to_portal_space("contact", recs, MAPS[:1], idx) == recs


def test_written_to_the_mailbox_a_portal_id_becomes_its_partner_or_is_left_out() -> None:
    idx = {"account": accounts(("P1", "M1"), ("P3", "M3"), dead="M3")}
    values, left = to_side("contact", "mailbox", {"email": "a@x.test", "account_id": "P1"},
                           MAPS, idx)
    assert (values, left) == ({"email": "a@x.test", "account_id": "M1"}, [])
    for unknown in ("P2", "P3"):  # unpaired, or its partner deleted
        values, left = to_side("contact", "mailbox", {"account_id": unknown}, MAPS, idx)
        assert (values, left) == ({}, ["account_id"])
    # The portal's values are portal ids already.
    assert to_side("contact", "portal", {"account_id": "P2"}, MAPS, idx) == (
        {"account_id": "P2"}, [])


def test_an_unsynced_reference_counts_as_changed_when_read_again() -> None:
    pair = Pair(kind="contact",
                portal=PairSide(id="pc", seen_at=5, fields=fingerprint(
                    Contact(id="pc", modified_at=5, email="a@x.test", account_id="P2"),
                    MAPS, "portal")),
                mailbox=PairSide(id="mc", seen_at=5, fields=fingerprint(
                    Contact(id="mc", modified_at=5, email="a@x.test"), MAPS, "mailbox")))
    marked = unsynced(pair, ["account_id"], MAPS)
    assert marked.portal.fields["account_id"] == value_hash(None)
    assert marked.mailbox.fields["account_id"] == value_hash(None)
    assert marked.portal.fields["email"] == pair.portal.fields["email"]
    # Read again once its account is paired: the reference is written.
    result = plan("contact", Changes(portal=[
        Contact(id="pc", modified_at=5, email="a@x.test", account_id="P2")]),
        PairIndex([marked]), ModuleOptions(fields=MAPS), Watermark())
    assert result.ops == [Update(kind="contact", side="mailbox", id="mc",
                                 values={"account_id": "P2"})]
    assert unsynced(pair, [], MAPS) is pair


def test_accounts_are_applied_before_contacts_and_email_last() -> None:
    assert MODULE_ORDER.index("account") < MODULE_ORDER.index("contact") \
        < MODULE_ORDER.index("task")
    assert MODULE_ORDER[-1] == "email"


# E-mail logging -----------------------------------------------------------------------

ME = "megan@contoso.test"


def mail(n: int, sender: str, to: list[str], cc: list[str] | None = None) -> EmailLog:
    return EmailLog(id=f"g{n}", modified_at=1000 + n, message_id=f"<m{n}@x>",
                    subject=f"s{n}", from_address=sender, to=to, cc=cc or [],
                    sent_at=100 * n)


def test_addresses_leave_out_the_mailbox_itself_and_skipped_domains() -> None:
    e = mail(1, "Ada@Example.test", [ME, "bob@news.spam.test"], ["ada@example.test",
                                                                "cy@other.test"])
    opts = EmailLogOptions(skip_domains=("spam.test",))
    assert addresses(e, ME, opts) == ["ada@example.test", "cy@other.test"]
    assert addresses(e, ME, EmailLogOptions()) == [
        "ada@example.test", "bob@news.spam.test", "cy@other.test"]


def test_only_messages_matching_a_contact_are_logged_unless_creating() -> None:
    ada = Contact(id="c1", modified_at=1, email="ada@example.test")
    known = {"ada@example.test": ada}
    idx = PairIndex()
    hit = decide(mail(1, "ada@example.test", [ME]), ME, known, EmailLogOptions(), idx)
    assert (hit.skip, hit.matched, hit.create) == (None, ("ada@example.test",), ())
    miss = decide(mail(2, "zed@example.test", [ME]), ME, known, EmailLogOptions(), idx)
    assert miss.skip == "no contact"
    make = decide(mail(2, "zed@example.test", [ME]), ME, known,
                  EmailLogOptions(create_leads=True), idx)
    assert (make.skip, make.create) == (None, ("zed@example.test",))
    gone = decide(EmailLog(id="g", modified_at=1, deleted=True), ME, known,
                  EmailLogOptions(), idx)
    assert gone.skip == "deleted"


def test_a_message_is_logged_once_by_message_id() -> None:
    known = {"ada@example.test": Contact(id="c1", modified_at=1, email="ada@example.test")}
    first = mail(1, "ada@example.test", [ME])
    again = msgspec.structs.replace(first, id="other-folder-id")  # moved: same Message-ID
    result, decisions = plan_emails([first, again], ME, known, EmailLogOptions(),
                                    PairIndex(), Watermark(portal=7, mailbox=50))
    assert [op.source_id for op in result.ops] == ["<m1@x>"]
    assert [d.skip for d in decisions] == [None, "logged"]
    assert result.watermark == Watermark(portal=7, mailbox=100)
    # Once its pair is stored, a re-run or a replay logs nothing.
    op = result.ops[0]
    assert isinstance(op, Create)
    index = PairIndex([logged_pair(op, "E1", 5)])
    again_plan, _ = plan_emails([first], ME, known, EmailLogOptions(), index, Watermark())
    assert again_plan.ops == []
    assert log_key(EmailLog(id="g7", modified_at=1)) == "id:g7"


def test_the_logged_record_names_contacts_their_account_and_open_deals() -> None:
    ada = Contact(id="c1", modified_at=1, email="ada@example.test", account_id="A1")
    bob = Contact(id="c2", modified_at=1, email="bob@example.test")
    deals = [OpportunityRef(id="o1", modified_at=1, contact_ids=["c2"]),
             OpportunityRef(id="o2", modified_at=1, contact_ids=["c1"], closed=True),
             OpportunityRef(id="o3", modified_at=1, contact_ids=["c9"])]
    values = {"message_id": "<m1@x>", "subject": "hi", "to": ["bob@example.test"]}
    rec = log_record(values, [bob, ada], deals, EmailLogOptions())
    assert (rec.contact_ids, rec.account_id, rec.opportunity_ids) == (["c2", "c1"], "A1",
                                                                      ["o1"])
    assert (rec.subject, rec.to) == ("hi", ["bob@example.test"])
    plain = log_record(values, [bob], deals, EmailLogOptions(auto_detect_deal=False))
    assert plain.opportunity_ids == []


def test_unknown_addresses_become_contacts_or_leads_and_companies() -> None:
    lead = new_contact("zed@acme.test", EmailLogOptions(create_leads=True), "A1")
    assert (lead.email, lead.last_name, lead.tags, lead.account_id) == (
        "zed@acme.test", "zed", ["lead"], "A1")
    plain = new_contact("zed@acme.test", EmailLogOptions(create_contacts=True,
                                                         create_leads=True))
    assert plain.tags == []
    acme = new_account("zed@Acme.test")
    assert acme is not None and (acme.name, acme.domain) == ("acme.test", "acme.test")
    assert new_account("someone@gmail.com") is None


# Progress -----------------------------------------------------------------------------

def test_progress_rate_and_eta() -> None:
    p = progress(25, 100, started_at=10_000, now=15_000, executing=True)
    assert (p.records_per_second, p.eta_ms) == (5.0, 15_000)
    assert progress(0, 100, 10_000, 15_000, True).eta_ms is None
    done = progress(100, 100, 10_000, 30_000, False)
    assert (done.eta_ms, done.records_per_second) == (0, 5.0)
    idle = progress(3, 10, 10_000, 99_000, False)  # ended early (failed): no ETA
    assert (idle.eta_ms, idle.records_per_second) == (None, None)
    wire = msgspec.to_builtins(p)
    assert wire == {"done": 25, "total": 100, "recordsPerSecond": 5.0, "etaMs": 15_000}


# The connector kinds' configuration --------------------------------------------------

def test_platform_configuration_and_credentials() -> None:
    cfg = cc.parse_config("platform", {"instanceUrl": "https://crm.example.com/api",
                                       "capabilities": ["tasks", "email"]},
                          allow_private=False)
    assert cfg.capability_set() == {Capability.TASKS, Capability.EMAIL}
    for bad, field in (({"capabilities": []}, "configuration.instanceUrl"),
                       ({"instanceUrl": "https://x.test", "capabilities": ["fly"]},
                        "configuration.capabilities"),
                       ({"instanceUrl": "https://x.test", "extra": 1},
                        "configuration.extra"),
                       ({"instanceUrl": "http://127.0.0.1:9/"}, "configuration.instanceUrl"),
                       ({"instanceUrl": "ftp://x.test"}, "configuration.instanceUrl")):
        with pytest.raises(BadRequest) as err:
            cc.parse_config("platform", bad, allow_private=False)
        assert err.value.field == field, (bad, err.value.description)
    cc.check_credentials("platform", ["apiToken"])
    assert cc.pick_credential("platform", {"accessToken": "t"}) == ("accessToken", "t")
    with pytest.raises(BadRequest) as err:
        cc.check_credentials("platform", [])
    assert err.value.field == "credentials.accessToken"
    cc.check_credentials("platform", [], required=False)
    with pytest.raises(BadRequest) as err:
        cc.check_credentials("platform", ["password"], required=False)
    assert err.value.field == "credentials.password"


def test_syncro_and_graph_configuration() -> None:
    s = cc.parse_config("syncro", {"subdomain": "acme", "defaultCustomerId": 7},
                        allow_private=False)
    assert (s.subdomain, s.default_customer_id) == ("acme", 7)
    for bad, field in (({"subdomain": "a.evil.test"}, "configuration.subdomain"),
                       ({}, "configuration.subdomain"),
                       ({"subdomain": "a", "defaultCustomerId": 0},
                        "configuration.defaultCustomerId")):
        with pytest.raises(BadRequest) as err:
            cc.parse_config("syncro", bad, allow_private=False)
        assert err.value.field == field, (bad, err.value.description)
    cc.check_credentials("syncro", ["apiKey"])
    g = cc.parse_config("graph", {"taskListId": "L1"}, allow_private=False)
    assert (g.task_list_id, g.past_days, g.future_days) == ("L1", 28, 180)
    with pytest.raises(BadRequest) as err:
        cc.parse_config("graph", {"pastDays": -1}, allow_private=False)
    assert err.value.field == "configuration.pastDays"
    with pytest.raises(BadRequest):
        cc.check_credentials("graph", ["apiToken"])


# After a create -------------------------------------------------------------------------

def test_a_create_keeps_what_the_side_assigned_and_sends_it_back() -> None:
    from switchboard.sync.merge import after_create
    from switchboard.sync.records import CalendarEvent

    maps = (FieldMap("subject", "subject"), FieldMap("ical_uid", "ical_uid"))
    source = CalendarEvent(id="P1", modified_at=5, subject="Kickoff")
    result = plan("event", Changes(portal=[source]), PairIndex(), ModuleOptions(fields=maps),
                  Watermark())
    op = result.ops[0]
    assert isinstance(op, Create) and op.side == "mailbox"
    made = CalendarEvent(id="M1", modified_at=9, subject="Kickoff", ical_uid="UID-1")
    back, pair = after_create(op, made, maps)
    assert back == {"ical_uid": "UID-1"}
    assert (pair.portal.id, pair.mailbox.id, pair.mailbox.seen_at) == ("P1", "M1", 9)
    assert pair.portal.fields == pair.mailbox.fields == fingerprint(made, maps, "mailbox")
    # Once the portal holds the UID too, reading both again changes nothing.
    echoed = CalendarEvent(id="P1", modified_at=7, subject="Kickoff", ical_uid="UID-1")
    again = plan("event", Changes(portal=[echoed], mailbox=[made]), PairIndex([pair]),
                 ModuleOptions(fields=maps), Watermark())
    assert again.ops == []
    same = CalendarEvent(id="M1", modified_at=9, subject="Kickoff")
    assert after_create(op, same, maps)[0] == {}


def test_a_module_syncs_the_fields_and_references_both_sides_store() -> None:
    from switchboard.sync.graph_map import CONTACT_FIELDS
    from switchboard.sync.run_module import effective_options
    from switchboard.sync.syncro_map import STORED_FIELDS

    def names(stored: list[frozenset[str] | None]) -> list[str]:
        opts = effective_options("contact", ModuleOptions(), stored)
        return [m.portal for m in opts.field_maps("contact")]

    syncro = names([None, frozenset(STORED_FIELDS["contact"])])
    assert "account_id" in syncro and "company_name" not in syncro
    graph = names([None, frozenset(CONTACT_FIELDS)])
    assert "company_name" in graph and "account_id" not in graph
    assert "account_id" in names([None, None])  # two platforms: references translated
    given = ModuleOptions(fields=(FieldMap("email", "email"),))
    assert effective_options("contact", given, [frozenset()]) is given
