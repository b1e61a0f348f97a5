"""Which creates a run may make concurrently (`ops.alongside`), and why a crash in the
middle of such a window duplicates nothing: the next run matches every record the window
created without its pair."""

from __future__ import annotations

import asyncio
import functools

import pytest

from switchboard.sync.ops import Create, alongside
from switchboard.sync.options import FieldMap, ModuleOptions
from tests.unit.sync.memory import Sync


def test_only_creates_with_a_key_no_other_create_shares_go_alongside() -> None:
    s = Sync()
    for i in range(5):
        s.portal.create("contact", first_name=f"N{i}", email=f"n{i}@example.com")
    s.portal.create("contact", first_name="Twin A", email="twin@example.com")
    s.portal.create("contact", first_name="Twin B", email=" TWIN@example.com")
    s.portal.create("contact", first_name="No mail")
    s.mailbox.create("contact", first_name="Back", email="back@example.com")
    result = s.plan()
    picked = {result.ops[i].source_id for i in alongside(result.ops, s.options.field_maps(
        "contact"))}  # type: ignore[union-attr]
    by_name = {r.id: r.first_name for r in [*s.portal.live(), *s.mailbox.live()]}
    assert sorted(by_name[i] for i in picked) == ["Back", "N0", "N1", "N2", "N3", "N4"]


def test_a_key_not_copied_as_itself_keeps_every_create_serial() -> None:
    maps = (FieldMap("email", "title"), FieldMap("first_name", "first_name"))
    s = Sync(options=ModuleOptions(fields=maps))
    s.portal.create("contact", first_name="A", email="a@example.com")
    assert alongside(s.plan().ops, maps) == set()
    # Accounts: the domain is read from the domain or the website; both must be copied.
    s = Sync("account", options=ModuleOptions(fields=(FieldMap("name", "name"),
                                                      FieldMap("domain", "domain"))))
    s.portal.create("account", name="Acme", domain="acme.com")
    assert alongside(s.plan().ops, s.options.field_maps("account")) == set()
    s = Sync("account")
    s.portal.create("account", name="Acme", domain="acme.com")
    s.portal.create("account", name="Acme")  # the same name: both serial
    s.portal.create("account", name="Globex", website="https://globex.com")
    ops = s.plan().ops
    assert [ops[i].values["name"] for i in sorted(alongside(  # type: ignore[union-attr]
        ops, s.options.field_maps("account")))] == ["Globex"]


def test_a_window_killed_before_any_of_its_pairs_is_matched_not_created_again() -> None:
    for kind, make in (("contact", lambda i: {"first_name": f"N{i}",
                                               "email": f"n{i}@example.com"}),
                       ("account", lambda i: {"name": f"Co {i}", "domain": f"co{i}.com"})):
        s = Sync(kind)  # type: ignore[arg-type]
        for i in range(20):
            s.portal.create(kind, **make(i))  # type: ignore[arg-type]
        first = s.plan()
        window = alongside(first.ops, s.options.field_maps(kind))  # type: ignore[arg-type]
        assert len(window) == 20
        # Every create of the window landed, none of their pairs did, nor the watermark.
        for i in window:
            op = first.ops[i]
            assert isinstance(op, Create)
            s.mailbox.create(kind, **op.values)  # type: ignore[arg-type]
        second = s.run()
        assert not [op for op in second.ops if isinstance(op, Create)]
        assert len(second.matched) == 20
        assert len(s.mailbox.live()) == 20 and len(s.index) == 20
        assert s.plan().empty


async def test_the_first_failure_in_a_window_fails_the_run_and_stops_the_rest() -> None:
    from switchboard.services.sync_window import Window as _Window

    window = _Window(3)
    finished: list[int] = []
    release = asyncio.Event()

    async def op(i: int) -> None:
        if i == 1:
            raise RuntimeError("refused")
        await release.wait()
        finished.append(i)

    with pytest.raises(RuntimeError, match="refused"):
        for i in range(10):
            await window.start(functools.partial(op, i))
        await window.drain()
    left = set(window.tasks)
    await window.cancel()
    assert left and all(t.cancelled() for t in left)
    assert finished == [] and not window.tasks


async def test_a_window_holds_at_most_its_size_in_flight() -> None:
    from switchboard.services.sync_window import Window as _Window

    window = _Window(4)
    running = peak = 0

    async def op() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1

    for _ in range(50):
        await window.start(op)
    await window.drain()
    assert peak == 4 and not window.tasks
