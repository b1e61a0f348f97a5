"""Hub names are unique in the registry's fold itself: every view refuses the later of two
hubs taking one name, whichever API process wrote them, and a view rebuilt from the
compacted topic agrees with the views that saw every record."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.registry import HubRecord, RegistryView, hub_key, record_encoder


def hub(hid: str, name: str, version: int = 0, unique: bool = True) -> HubRecord:
    return HubRecord(hub_id=hid, name=name, token_hash=hid * 8, created_at=0,
                     version=version, unique_name=unique)


def write(view: RegistryView, log: list[tuple[bytes, bytes | None]],
          rec: HubRecord | None, hid: str) -> bool:
    """Append one record to `log`, fold it, and compensate a refusal as the store does
    (a tombstone for a create, the current version again for an update)."""
    value = None if rec is None else record_encoder.encode(rec)
    log.append((hub_key(hid), value))
    accepted = view.apply(len(log) - 1, hub_key(hid), value).accepted
    if not accepted:
        current = view.hubs.get(hid)
        again = None if current is None else record_encoder.encode(
            msgspec.structs.replace(current, version=current.version + 1))
        log.append((hub_key(hid), again))
        view.apply(len(log) - 1, hub_key(hid), again)
    return accepted


def test_the_later_of_two_hubs_named_alike_is_refused_whatever_the_case() -> None:
    view, log = RegistryView(), []  # type: list[tuple[bytes, bytes | None]]
    assert write(view, log, hub("a", "Acme"), "a")
    assert not write(view, log, hub("b", "ACME"), "b")
    assert view.outcome(1) is not None and view.outcome(1).reason == "name_taken"  # type: ignore[union-attr]
    assert set(view.hubs) == {"a"} and view.hubs_named("acme") == {"a"}


def test_renames_free_and_take_names() -> None:
    view, log = RegistryView(), []  # type: list[tuple[bytes, bytes | None]]
    assert write(view, log, hub("a", "one"), "a")
    assert write(view, log, hub("b", "two"), "b")
    assert not write(view, log, hub("b", "ONE", version=1), "b")  # taken
    assert view.hubs["b"].name == "two"
    assert write(view, log, hub("a", "three", version=1), "a")  # frees "one"
    assert write(view, log, hub("b", "One", version=2), "b")  # (1: the compensation)
    assert view.hubs_named("one") == {"b"} and view.hubs_named("two") == set()
    assert write(view, log, None, "b")  # a delete frees it too
    assert write(view, log, hub("c", "one"), "c")


def test_hubs_named_alike_before_the_rule_keep_folding() -> None:
    view, log = RegistryView(), []  # type: list[tuple[bytes, bytes | None]]
    assert write(view, log, hub("a", "acme", unique=False), "a")
    assert write(view, log, hub("b", "Acme", unique=False), "b")
    assert write(view, log, hub("b", "Acme", version=1, unique=False), "b")  # e.g. rotation
    assert view.hubs_named("ACME") == {"a", "b"}
    # ... but no new hub takes their name, and renaming one away works.
    assert not write(view, log, hub("c", "acme"), "c")
    assert write(view, log, hub("a", "acme-old", version=1), "a")
    assert not write(view, log, hub("c2", "acme"), "c2")  # b still holds it
    assert write(view, log, None, "b")
    assert write(view, log, hub("c3", "acme"), "c3")


def compact(log: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes | None]]:
    """What Kafka's compaction may leave: the last record of each key, in offset order
    (tombstones kept, as within delete.retention.ms, or dropped)."""
    last = {key: i for i, (key, _) in enumerate(log)}
    return [rec for i, rec in enumerate(log) if last[rec[0]] == i]


ops = st.lists(st.tuples(st.sampled_from(["create", "rename", "delete"]),
                         st.integers(0, 5), st.sampled_from(["x", "X", "y", "z", "w"])),
               max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops, st.booleans())
def test_a_view_rebuilt_from_the_compacted_topic_agrees(script: list[tuple[str, int, str]],
                                                         drop_tombstones: bool) -> None:
    view, log = RegistryView(), []  # type: list[tuple[bytes, bytes | None]]
    created = 0
    for op, pick, name in script:
        if op == "create":
            created += 1
            write(view, log, hub(f"h{created}", name), f"h{created}")
            continue
        ids = sorted(view.hubs)
        if not ids:
            continue
        current = view.hubs[ids[pick % len(ids)]]
        if op == "rename":
            write(view, log, msgspec.structs.replace(current, name=name,
                                                     version=current.version + 1),
                  current.hub_id)
        else:
            write(view, log, None, current.hub_id)
    names = [h.name.casefold() for h in view.hubs.values()]
    assert len(names) == len(set(names))
    rebuilt = RegistryView()
    kept = compact(log)
    if drop_tombstones:
        kept = [rec for rec in kept if rec[1] is not None]
    for i, (key, value) in enumerate(kept):
        rebuilt.apply(i, key, value)
    assert rebuilt.hubs == view.hubs
