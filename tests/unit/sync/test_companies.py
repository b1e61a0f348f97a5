"""Contacts filed under their company (``createCompany``), pure parts: which writes are
filed, the company's key, which existing account it is, what is made and kept."""

from __future__ import annotations

import msgspec

from switchboard.sync.companies import (
    Filing,
    company_key,
    company_pair,
    filings,
    known,
    new_account,
    pick,
)
from switchboard.sync.ops import Create, Delete, Op, Update
from switchboard.sync.options import Direction, ModuleOptions
from switchboard.sync.pairs import PairIndex, PairSide
from switchboard.sync.records import Account, CalendarEvent, Record
from switchboard.sync.records import Attachment as File

ON = ModuleOptions(create_company=True)


def create(side: str, **values: object) -> Create:
    return Create(kind="contact", side=side, source_id=f"src-{values.get('email')}",  # type: ignore[arg-type]
                  values=values, source=PairSide(id="s"), fields={})  # type: ignore[arg-type]


def test_only_portal_writes_with_a_company_and_no_account_are_filed() -> None:
    ops: list[Op] = [
        create("portal", company_name="Globex", email="ann@globex.test"),
        create("mailbox", company_name="Globex", email="bob@globex.test"),
        create("portal", company_name="  ", email="x@y.test"),
        create("portal", email="nia@y.test"),
        create("portal", company_name="Initech", account_id="A1"),
        create("portal", company_name="Hooli", email="gil@gmail.com"),
        Update(kind="contact", side="portal", id="P7", values={"company_name": "Acme"}),
        Update(kind="contact", side="portal", id="P8", values={"title": "CEO"}),
        Delete(kind="contact", side="portal", id="P9"),
    ]
    got = filings(ops, ON, {"P7": "cy@acme.test"})
    assert [(f.index, f.key, f.name, f.domain) for f in got] == [
        (0, "company:globex", "Globex", "globex.test"),
        (5, "company:hooli", "Hooli", None),  # a public mail domain is no company's
        (6, "company:acme", "Acme", "acme.test"),
    ]
    assert filings(ops, ModuleOptions()) == []  # the option off
    # Only as the direction lets mailbox contacts reach the portal.
    assert filings(ops, ModuleOptions(create_company=True,
                                      direction=Direction.FROM_PORTAL)) == []
    assert len(filings(ops, ModuleOptions(create_company=True,
                                          direction=Direction.TO_PORTAL))) == 3


def test_company_keys_fold_case_and_spaces() -> None:
    assert company_key(" Globex   Corp ") == company_key("globex corp") == \
        "company:globex corp"
    assert company_key("") is None and company_key(None) is None and company_key(5) is None


def test_an_existing_account_is_picked_by_name_then_domain() -> None:
    f = Filing(0, "company:globex", "Globex", "globex.test")
    by_name = [Account(id="A2", modified_at=1, name="GLOBEX"),
               Account(id="A1", modified_at=1, name="globex", deleted=True),
               Account(id="A0", modified_at=1, name="Globex Holdings")]
    assert pick(f, by_name, []) == by_name[0]  # live, same name (not a longer one)
    at = [Account(id="A5", modified_at=1, name="Globex Inc", domain="globex.test")]
    assert pick(f, by_name[1:], at) == at[0]
    assert pick(f, [], []) is None
    made = new_account(f)
    assert (made.name, made.domain) == ("Globex", "globex.test")
    assert new_account(Filing(0, "company:x", "X", None)).domain is None


def test_the_account_made_or_found_is_kept_in_the_pair_index() -> None:
    f = Filing(0, "company:globex", "Globex", None)
    index = PairIndex()
    assert known(index, f.key) is None
    pair = company_pair(f, Account(id="A9", modified_at=5, name="Globex"))
    index.add(pair)
    assert known(index, "company:globex") == "A9"
    assert pair.kind == "account" and pair.mailbox.id == "company:globex"
    gone = msgspec.structs.replace(pair, portal=msgspec.structs.replace(
        pair.portal, deleted=True))
    assert known(PairIndex([gone]), f.key) is None


def test_event_attachments_on_the_wire() -> None:
    ev = CalendarEvent(id="e1", modified_at=1, subject="Review", attachments=[
        File(name="a.bin", content_type="application/octet-stream", size=3,
             content_bytes="YWJj")])
    wire = msgspec.json.decode(msgspec.json.encode(ev))
    assert wire["attachments"] == [{"name": "a.bin", "contentType":
                                    "application/octet-stream", "size": 3,
                                    "contentBytes": "YWJj"}]
    assert msgspec.json.decode(msgspec.json.encode(ev), type=Record) == ev
    assert "attachments" not in msgspec.json.decode(msgspec.json.encode(
        CalendarEvent(id="e1", modified_at=1)))
