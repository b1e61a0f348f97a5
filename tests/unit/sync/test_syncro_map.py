"""Syncro customers and contacts ⇄ canonical accounts and contacts (pure), round trips
included: what the connector writes, read back, is what it wrote."""

from __future__ import annotations

import pytest

from switchboard.sync import syncro_map as m
from switchboard.sync.errors import RecordNotFound, Unsupported
from switchboard.sync.options import FieldMap
from switchboard.sync.records import Account, Contact

T = "2024-05-06T07:08:09.250-00:00"
T_MS = 1714979289250


def test_times_are_epoch_ms_and_an_unreadable_one_is_zero() -> None:
    assert m.parse_time(T) == T_MS
    assert m.parse_time("2024-05-06T09:08:09.250+02:00") == T_MS
    assert m.parse_time("2024-05-06T07:08:09.250") == T_MS  # bare: UTC
    assert m.parse_time("yesterday") == m.parse_time(None) == 0


def test_a_customer_is_an_account_named_by_its_business_or_its_person() -> None:
    business = {"id": 12, "business_name": "Acme", "firstname": "Ada", "lastname": "L",
                "email": "Ada@Acme.Test", "phone": "555", "address": "1 Road",
                "updated_at": T}
    assert m.account_from_customer(business) == Account(
        id="12", modified_at=T_MS, name="Acme", domain="acme.test", phone="555",
        address="1 Road")
    person = {"id": 13, "business_name": None, "firstname": "Ada", "lastname": "Lovelace",
              "email": None, "disabled": True, "updated_at": T}
    account = m.account_from_customer(person)
    assert (account.name, account.domain, account.deleted) == ("Ada Lovelace", None, True)


def test_an_account_written_to_syncro_reads_back_the_same_on_the_synced_fields() -> None:
    account = Account(id="p1", modified_at=1, name="Globex", domain="globex.test",
                      phone="1", address="2 Street", industry="Paper")
    body = m.customer_body(account)
    assert body == {"business_name": "Globex", "phone": "1", "address": "2 Street"}
    back = m.account_from_customer({**body, "id": 5, "updated_at": T})
    assert all(getattr(back, f) == getattr(account, f) for f in m.ACCOUNT_FIELDS)
    assert m.customer_body(Account(id="x", modified_at=0))["business_name"] == "(no name)"
    assert m.customer_values({"name": "New", "phone": None}) == {
        "business_name": "New", "phone": None}
    with pytest.raises(Unsupported):
        m.customer_values({"industry": "Paper"})


@pytest.mark.parametrize(("name", "first", "last"), [
    ("Ada Lovelace", "Ada", "Lovelace"),
    ("Ludwig van Beethoven", "Ludwig", "van Beethoven"),
    ("Cher", "Cher", None),
    ("  ", None, None),
    (None, None, None),
])
def test_a_contacts_one_name_splits_at_the_first_space_and_joins_back(
        name: str | None, first: str | None, last: str | None) -> None:
    assert m.split_name(name) == (first, last)
    if name and name.strip():
        assert m.join_name(first, last) == " ".join(name.split())


def test_a_syncro_contact_round_trips_through_the_canonical_contact() -> None:
    syncro = {"id": 77, "customer_id": 12, "name": "Ludwig van Beethoven",
              "email": "lvb@bonn.test", "phone": "1", "mobile": "2", "title": "Composer",
              "notes": "n", "updated_at": T}
    contact = m.contact_from_syncro(syncro)
    assert contact == Contact(id="77", modified_at=T_MS, first_name="Ludwig",
                              last_name="van Beethoven", email="lvb@bonn.test", phone="1",
                              mobile_phone="2", title="Composer", account_id="12")
    body = m.syncro_contact_body(contact, 12)
    assert body == {"name": "Ludwig van Beethoven", "email": "lvb@bonn.test", "phone": "1",
                    "mobile": "2", "title": "Composer", "customer_id": 12}
    back = m.contact_from_syncro({**body, "id": 78, "updated_at": T})
    assert all(getattr(back, f) == getattr(contact, f) for f in m.CONTACT_FIELDS)


def test_changing_half_a_name_keeps_the_other_half() -> None:
    current = Contact(id="1", modified_at=0, first_name="Ada", last_name="Lovelace")
    assert m.syncro_contact_values({"first_name": "Augusta"}, current) == {
        "name": "Augusta Lovelace"}
    assert m.syncro_contact_values({"last_name": None, "first_name": "A"}) == {"name": "A"}
    assert m.syncro_contact_values({"mobile_phone": "9"}) == {"mobile": "9"}
    with pytest.raises(Unsupported):
        m.syncro_contact_values({"company_name": "Acme"})
    # No name at all: Syncro wants one, the e-mail stands in.
    assert m.syncro_contact_body(Contact(id="x", modified_at=0, email="a@b.test"), 3)[
        "name"] == "a@b.test"


def test_field_maps_name_only_what_syncro_stores() -> None:
    assert m.field_maps("account") == tuple(FieldMap(f, f) for f in ("name", "phone",
                                                                     "address"))
    assert {f.portal for f in m.field_maps("contact")} == {
        "first_name", "last_name", "email", "phone", "mobile_phone", "title"}
    with pytest.raises(Unsupported):
        m.field_maps("task")


def test_ids_are_syncros_integers() -> None:
    assert m.syncro_id("1234") == 1234
    for bad in ("P12", "-1", "", "1" * 17):
        with pytest.raises(RecordNotFound):
            m.syncro_id(bad)


def test_a_contact_moves_to_another_customer_by_its_account() -> None:
    from switchboard.sync.syncro_map import STORED_FIELDS, syncro_contact_values

    assert syncro_contact_values({"account_id": "42", "title": "CTO"}) == {
        "customer_id": 42, "title": "CTO"}
    # Syncro keeps every contact under a customer: no account leaves it where it is.
    assert syncro_contact_values({"account_id": None}) == {}
    assert "account_id" in STORED_FIELDS["contact"]
    assert "domain" not in STORED_FIELDS["account"]  # read-only: matched, never written
