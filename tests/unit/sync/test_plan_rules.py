"""The planner's rules, one example each: match before create, loop prevention, per-field
conflicts, deletes against the direction, idempotence, interrupted runs, review mode."""

from __future__ import annotations

import pytest

from switchboard.sync.ops import Create, Delete, Update, Watermark
from switchboard.sync.options import Direction, FieldMap, ModuleOptions
from switchboard.sync.pairs import PairIndex
from switchboard.sync.plan import Changes, plan
from switchboard.sync.records import Account, Contact, Task
from switchboard.sync.review import review
from tests.unit.sync.memory import Sync


def kinds(ops: list) -> list[tuple[str, str]]:
    return [(type(op).__name__, op.side) for op in ops]


# Match before create ------------------------------------------------------------------

def test_first_run_matches_contacts_by_email_instead_of_duplicating() -> None:
    s = Sync()
    p = s.portal.create("contact", first_name="Ada", email="ada@example.com", phone="1")
    m = s.mailbox.create("contact", first_name="Ada", email=" ADA@Example.com")
    result = s.run()
    assert [(x.portal_id, x.mailbox_id, x.by) for x in result.matched] == [(p.id, m.id, "email")]
    assert not [op for op in result.ops if isinstance(op, Create)]
    # The gap is filled (an empty value never overwrites a filled one).
    assert Update(kind="contact", side="mailbox", id=m.id, values={"phone": "1"}) in result.ops
    assert len(s.portal.live()) == len(s.mailbox.live()) == 1


def test_an_unchanged_record_on_the_other_side_is_found_by_lookup() -> None:
    s = Sync()
    p = s.portal.create("contact", first_name="Ada", email="ada@example.com")
    # The profile starts after the portal's contact last changed (a run from dtStartUTC):
    # the contact is not among the changes, only a lookup by e-mail can find it.
    s.watermark = Watermark(portal=s.clock.tick(), mailbox=s.clock.now)
    m = s.mailbox.create("contact", first_name="Ada", email="ada@example.com")
    assert kinds(s.plan(lookups=False).ops) == [("Create", "portal")]
    result = s.run()
    assert result.ops == []
    assert [(x.portal_id, x.mailbox_id, x.by) for x in result.matched] == [
        (p.id, m.id, "email")]
    assert s.plan().empty


def test_accounts_match_by_email_domain_then_by_name() -> None:
    s = Sync("account")
    a = s.portal.create("account", name="Acme Inc", domain="acme.com")
    b = s.portal.create("account", name="Globex  Corp")
    ma = s.mailbox.create("account", name="ACME", website="https://www.Acme.com/about")
    mb = s.mailbox.create("account", name="globex corp")
    result = s.run()
    assert {(x.portal_id, x.mailbox_id, x.by) for x in result.matched} == {
        (a.id, ma.id, "domain"), (b.id, mb.id, "name")}
    assert not [op for op in result.ops if isinstance(op, Create)]


def test_keyless_records_match_by_identical_content() -> None:
    s = Sync("task")
    s.portal.create("task", title="Call Ada", due_at=5_000)
    s.mailbox.create("task", title="Call Ada", due_at=5_000)
    s.mailbox.create("task", title="Send quote")
    result = s.run()
    assert [x.by for x in result.matched] == ["content"]
    assert kinds(result.ops) == [("Create", "portal")]


def test_same_side_duplicates_are_mirrored_one_to_one() -> None:
    s = Sync()
    s.portal.create("contact", first_name="A", email="x@example.com")
    s.portal.create("contact", first_name="B", email="x@example.com")
    s.mailbox.create("contact", first_name="A", email="x@example.com")
    s.run()
    assert len(s.portal.live()) == len(s.mailbox.live()) == 2
    assert len(s.index) == 2


# Loop prevention and idempotence --------------------------------------------------------

def test_the_syncs_own_writes_are_not_synced_back_and_replanning_is_empty() -> None:
    s = Sync()
    p = s.portal.create("contact", first_name="Ada", email="ada@example.com")
    first = s.run()
    assert kinds(first.ops) == [("Create", "mailbox")]
    # The created mailbox record is read back (it changed after the watermark): an echo.
    again = s.plan()
    assert again.empty, again
    s.portal.update(p.id, title="CTO")
    second = s.run()
    assert second.ops == [Update(kind="contact", side="mailbox",
                                 id=s.mailbox.live()[0].id, values={"title": "CTO"})]
    assert s.plan().empty
    assert s.plan(since_zero=True).empty  # a replay of everything changes nothing


def test_repeated_and_stale_versions_in_a_listing_are_harmless() -> None:
    s = Sync()
    p = s.portal.create("contact", first_name="Ada", email="ada@example.com")
    s.run()
    old = s.portal.records[p.id]
    s.portal.update(p.id, first_name="Ada L.")
    s.run()
    # The old version shows up again (a lagging listing), twice, with the new one...
    changes = Changes(portal=[old, s.portal.records[p.id], old])
    assert plan("contact", changes, s.index, s.options, s.watermark).empty
    # ...or alone (a replica behind the one read last time): it is not a change.
    changes = Changes(portal=[old])
    assert plan("contact", changes, s.index, s.options, s.watermark).empty


# Conflicts -----------------------------------------------------------------------------

def _paired() -> tuple[Sync, str, str]:
    s = Sync()
    p = s.portal.create("contact", first_name="Ada", email="ada@example.com", phone="0")
    s.run()
    return s, p.id, s.mailbox.live()[0].id


def test_a_field_changed_on_both_sides_goes_to_the_later_change() -> None:
    s, pid, mid = _paired()
    s.portal.update(pid, phone="portal")
    s.mailbox.update(mid, phone="mailbox")  # later
    result = s.run()
    [c] = result.conflicts
    assert (c.field, c.portal_value, c.mailbox_value, c.winner) == (
        "phone", "portal", "mailbox", "mailbox")
    assert result.ops == [Update(kind="contact", side="portal", id=pid,
                                 values={"phone": "mailbox"})]
    assert s.portal.records[pid].phone == s.mailbox.records[mid].phone == "mailbox"
    assert s.plan().empty


def test_the_portal_wins_a_tie() -> None:
    s, pid, mid = _paired()
    s.portal.update(pid, phone="portal")
    s.clock.now -= 1  # the same millisecond on both sides
    s.mailbox.update(mid, phone="mailbox")
    result = s.run()
    assert [c.winner for c in result.conflicts] == ["portal"]
    assert s.mailbox.records[mid].phone == "portal"


def test_conflicts_are_per_field_and_use_per_field_times() -> None:
    s, pid, mid = _paired()
    s.portal.update(pid, phone="p-phone")        # the portal's phone: early
    s.mailbox.update(mid, phone="m-phone", last_name="Lovelace")
    s.portal.update(pid, title="Countess")       # the portal's record: latest
    result = s.run()
    # The mailbox's phone is later than the portal's phone, though the portal record is
    # newer: per-field times decide, and the fields changed on one side just merge.
    assert [(c.field, c.winner) for c in result.conflicts] == [("phone", "mailbox")]
    for rec in (s.portal.records[pid], s.mailbox.records[mid]):
        assert (rec.phone, rec.last_name, rec.title) == ("m-phone", "Lovelace", "Countess")
    assert s.plan().empty


def test_same_change_on_both_sides_is_no_conflict() -> None:
    s, pid, mid = _paired()
    s.portal.update(pid, phone="9")
    s.mailbox.update(mid, phone="9")
    result = s.run()
    assert result.ops == [] and result.conflicts == []
    assert s.plan().empty


# Directions and deletes ----------------------------------------------------------------

def test_one_way_writes_only_toward_its_target() -> None:
    s = Sync(options=ModuleOptions(direction=Direction.TO_PORTAL))
    s.portal.create("contact", email="only-portal@example.com")
    m = s.mailbox.create("contact", email="m@example.com", phone="1")
    result = s.run()
    assert kinds(result.ops) == [("Create", "portal")]
    pid = s.index.find("contact", "mailbox", m.id).portal.id  # type: ignore[union-attr]
    s.portal.update(pid, phone="portal edit")
    assert s.run().ops == []  # portal edits do not flow to the mailbox
    s.mailbox.update(m.id, phone="2")
    assert s.run().ops == [Update(kind="contact", side="portal", id=pid,
                                  values={"phone": "2"})]


def test_portal_delete_propagates_by_default() -> None:
    s, pid, mid = _paired()
    s.portal.delete(pid)
    result = s.run()
    assert result.ops == [Delete(kind="contact", side="mailbox", id=mid)]
    assert len(s.index) == 0 and s.mailbox.records[mid].deleted
    assert s.plan().empty


def test_mailbox_delete_does_not_propagate_unless_asked_and_is_not_undone() -> None:
    s, pid, mid = _paired()
    s.mailbox.delete(mid)
    result = s.run()
    assert result.ops == []
    assert s.index.find("contact", "mailbox", mid).mailbox.deleted  # type: ignore[union-attr]
    s.portal.update(pid, title="edited later")
    assert s.run().ops == []  # not recreated, not written to the deleted record
    assert not s.portal.records[pid].deleted

    s2, pid2, mid2 = _paired()
    s2.options = ModuleOptions(mailbox_deletes=True)
    s2.mailbox.delete(mid2)
    assert s2.run().ops == [Delete(kind="contact", side="portal", id=pid2)]


@pytest.mark.parametrize(("direction", "deleted"), [
    (Direction.TO_PORTAL, "portal"), (Direction.FROM_PORTAL, "mailbox")])
def test_no_delete_against_the_direction(direction: Direction, deleted: str) -> None:
    s, pid, mid = _paired()
    s.options = ModuleOptions(direction=direction, portal_deletes=True, mailbox_deletes=True)
    s.portal.delete(pid) if deleted == "portal" else s.mailbox.delete(mid)
    assert s.run().ops == []
    assert len(s.portal.live()) + len(s.mailbox.live()) == 1


def test_an_edit_later_than_a_delete_wins_and_an_earlier_one_loses() -> None:
    s, pid, mid = _paired()
    s.portal.delete(pid)
    s.mailbox.update(mid, phone="kept")
    result = s.run()
    assert result.ops == []
    assert [(c.field, c.winner) for c in result.conflicts] == [("deleted", "mailbox")]
    assert not s.mailbox.records[mid].deleted

    s, pid, mid = _paired()
    s.mailbox.update(mid, phone="lost")
    s.portal.delete(pid)
    result = s.run()
    assert result.ops == [Delete(kind="contact", side="mailbox", id=mid)]
    assert [(c.field, c.winner) for c in result.conflicts] == [("deleted", "portal")]


# Interrupted runs ----------------------------------------------------------------------

def test_a_run_stopped_between_a_create_and_its_pair_does_not_duplicate() -> None:
    for kind, values in (("contact", {"email": "a@example.com"}), ("task", {"title": "T"})):
        s = Sync(kind)  # type: ignore[arg-type]
        s.portal.create(kind, **values)  # type: ignore[arg-type]
        s.portal.create(kind, **{k: v + "2" for k, v in values.items()})  # type: ignore[arg-type]
        first = s.plan()
        assert len(first.ops) == 2
        assert not s.apply(first, stop_after=1, lose_last_pair=True)
        second = s.run()
        assert len(second.matched) == 1 and len(second.ops) == 1
        assert len(s.mailbox.live()) == 2 and len(s.index) == 2
        assert s.plan().empty


# Field mappings and review -------------------------------------------------------------

def test_field_mappings_map_one_field_to_another() -> None:
    maps = (FieldMap("email", "email"), FieldMap("mobile_phone", "phone"))
    s = Sync(options=ModuleOptions(fields=maps))
    s.portal.create("contact", email="a@example.com", mobile_phone="555", title="ignored")
    s.run()
    [m] = s.mailbox.live()
    assert isinstance(m, Contact)
    assert (m.phone, m.mobile_phone, m.title) == ("555", None, None)
    assert s.plan().empty
    with pytest.raises(ValueError, match="no field"):
        plan("contact", Changes(), PairIndex(),
             ModuleOptions(fields=(FieldMap("nope", "email"),)), s.watermark)
    with pytest.raises(ValueError, match="mapped twice"):
        plan("contact", Changes(), PairIndex(), ModuleOptions(
            fields=(FieldMap("email", "email"), FieldMap("phone", "email"))), s.watermark)


def test_records_of_another_kind_are_refused() -> None:
    with pytest.raises(TypeError):
        plan("contact", Changes(portal=[Task(id="t", modified_at=1)]), PairIndex(),
             ModuleOptions(), Watermark())


def test_review_reports_the_plan_and_writes_nothing() -> None:
    s, pid, mid = _paired()
    for i in range(7):
        s.mailbox.create("contact", first_name=f"N{i}", email=f"n{i}@example.com")
    s.portal.update(pid, phone="p")
    s.mailbox.update(mid, phone="m")
    before = (dict(s.portal.records), dict(s.mailbox.records))
    report = review(s.plan(), samples=3)
    assert (dict(s.portal.records), dict(s.mailbox.records)) == before
    assert report.would_create.portal == 7 and report.would_create.mailbox == 0
    assert report.would_update.portal == 1 and report.conflicts == 1
    creates = [x for x in report.samples if x.action == "create"]
    assert len(creates) == 3 and creates[0].label == "n0@example.com"
    assert report.conflict_samples[0].field == "phone"


def test_account_create_carries_only_mapped_fields() -> None:
    s = Sync("account")
    s.mailbox.create("account", name="Acme", domain="acme.com", owner_id="u1")
    [op] = s.plan().ops
    assert isinstance(op, Create) and "owner_id" not in op.values
    s.run()
    [a] = s.portal.live()
    assert isinstance(a, Account) and a.owner_id is None and a.domain == "acme.com"
