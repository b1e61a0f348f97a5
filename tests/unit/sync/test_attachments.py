"""E-mail attachments, pure parts: which are copied within the cap, the record made of
one read, what an answer may cost to read, and the counts in a module's report."""

from __future__ import annotations

import base64

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from switchboard.sync.attachments import (
    AttachmentCounts,
    AttachmentInfo,
    answer_cap,
    attachment,
    cap,
    select,
)
from switchboard.sync.profiles import ModuleCounts
from switchboard.sync.records import ATTACHMENT_CEILING, Attachment, EmailLog, Record


def info(name: str, size: int, *, file: bool = True, inline: bool = False) -> AttachmentInfo:
    return AttachmentInfo(id=f"id-{name}", name=name, size=size, is_file=file,
                          is_inline=inline)


def test_files_are_taken_in_order_while_they_fit() -> None:
    got = select([info("a", 400), info("big", 700), info("b", 500), info("c", 200)], 1000)
    assert [x.name for x in got.take] == ["a", "b"]
    # "big" would pass the cap, and so would "c" after a and b: skipped and counted.
    assert [x.name for x in got.skipped] == ["big", "c"]


def test_not_files_are_skipped_and_inline_pictures_ignored() -> None:
    got = select([info("item", 10, file=False), info("logo", 10, inline=True),
                  info("unknown size", -1), info("doc", 10)], 1000)
    assert [x.name for x in got.take] == ["doc"]
    assert [x.name for x in got.skipped] == ["item", "unknown size"]
    assert select([], 10) == select([], 0)


@given(st.lists(st.tuples(st.integers(-1, 5000), st.booleans(), st.booleans())),
       st.integers(0, 20_000))
def test_never_more_than_the_cap(specs: list[tuple[int, bool, bool]], limit: int) -> None:
    infos = [info(str(i), size, file=f, inline=inl)
             for i, (size, f, inl) in enumerate(specs)]
    got = select(infos, limit)
    assert sum(x.size for x in got.take) <= limit
    assert all(x.is_file and x.size >= 0 for x in got.take)
    # Each attachment is taken, skipped, or (inline picture) left out, never two.
    assert len(got.take) + len(got.skipped) == sum(
        1 for x in infos if not (x.is_inline and x.is_file))


def test_an_attachment_read_becomes_the_record_if_it_fits() -> None:
    raw = b"%PDF-1.7 \x00\xff" * 10
    b64 = base64.b64encode(raw).decode()
    doc = AttachmentInfo(id="1", name="a.pdf", content_type="application/pdf",
                         size=len(raw) + 180)
    assert attachment(doc, b64, len(raw)) == Attachment(
        name="a.pdf", content_type="application/pdf", size=len(raw), content_bytes=b64)
    assert attachment(doc, b64, len(raw) - 1) is None  # more than the budget left
    assert attachment(doc, None, 10_000) is None
    assert attachment(doc, "not base64!", 10_000) is None
    nameless = attachment(AttachmentInfo(id="2", name=""), b64, 10_000)
    assert nameless is not None and nameless.name == "attachment"


def test_an_answer_is_read_only_as_far_as_its_size_needs() -> None:
    assert answer_cap(info("x", 3_000_000)) == 4_000_000 + 64 * 1024
    assert answer_cap(info("x", -1)) == 64 * 1024
    assert cap(10**12) == ATTACHMENT_CEILING and cap(-5) == 0 and cap(100) == 100


def test_records_and_counts_on_the_wire() -> None:
    email = EmailLog(id="e1", modified_at=1, attachments=[
        Attachment(name="a.txt", content_type="text/plain", size=3, content_bytes="YWJj")])
    wire = msgspec.json.encode(email)
    assert msgspec.json.decode(wire)["attachments"] == [
        {"name": "a.txt", "contentType": "text/plain", "size": 3, "contentBytes": "YWJj"}]
    assert msgspec.json.decode(wire, type=Record) == email
    # Without attachments the record is as before (no field), and so are the counts.
    assert "attachments" not in msgspec.json.decode(msgspec.json.encode(
        EmailLog(id="e1", modified_at=1)))
    plain = msgspec.json.decode(msgspec.json.encode(ModuleCounts(created=2)))
    assert "attachments" not in plain
    counted = ModuleCounts(created=2, attachments=AttachmentCounts(copied=1, skipped=2))
    back = msgspec.json.decode(msgspec.json.encode(counted), type=ModuleCounts)
    assert back == counted and msgspec.to_builtins(back)["attachments"] == {
        "copied": 1, "skipped": 2}
