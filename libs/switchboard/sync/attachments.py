"""E-mail attachments copied with a logged e-mail (pure: which to copy, the record made
of one, the counts). The I/O is `switchboard.services.graph_attachments`.

With the e-mail module's ``fetchAttachments`` (seed 000's ``emailFetchAttachments``),
each message logged to the portal carries its file attachments in its record
(`EmailLog.attachments`, bytes base64 as Graph's fileAttachment). Memory stays bounded:
a message's attachments are listed without their bytes, then copied in order while
their total stays within `max_bytes` (``SWITCHBOARD_SYNC_ATTACHMENT_MAX_BYTES``); one
that would pass it is skipped and counted, as is one that is not a file (an attached
Outlook item, a link to a cloud file). Inline ones (pictures in the body, a signature's
logo) are not copied and not counted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from msgspec import Struct

from switchboard.sync.records import ATTACHMENT_CEILING, Attachment

__all__ = ["FILE", "AttachmentCounts", "AttachmentInfo", "Selection", "answer_cap",
           "attachment", "cap", "select"]

FILE = "#microsoft.graph.fileAttachment"
# Room in an attachment's answer for everything but its bytes (name, type, ids).
_ANSWER_OVERHEAD = 64 * 1024


class AttachmentInfo(Struct, frozen=True, kw_only=True):
    """An attachment as listed, without its bytes."""

    id: str
    name: str
    content_type: str | None = None
    size: int = 0  # Graph's size: at least the decoded bytes
    is_file: bool = True
    is_inline: bool = False


class Selection(Struct, frozen=True, kw_only=True):
    take: list[AttachmentInfo]
    skipped: list[AttachmentInfo]


class AttachmentCounts(Struct, kw_only=True, rename="camel"):
    """What the e-mail module did with attachments in a run (in its module counts)."""

    copied: int = 0
    skipped: int = 0  # too large for the cap, or not a file


def cap(setting: int) -> int:
    """The effective per-message cap: the setting, within 0 and the records' ceiling."""
    return max(0, min(setting, ATTACHMENT_CEILING))


def select(infos: Sequence[AttachmentInfo], max_bytes: int) -> Selection:
    """Which attachments to copy: files, in order, while their total fits `max_bytes`."""
    take: list[AttachmentInfo] = []
    skipped: list[AttachmentInfo] = []
    total = 0
    for info in infos:
        if info.is_inline and info.is_file:
            continue
        if not info.is_file or info.size < 0 or total + info.size > max_bytes:
            skipped.append(info)
            continue
        take.append(info)
        total += info.size
    return Selection(take=take, skipped=skipped)


def answer_cap(info: AttachmentInfo) -> int:
    """How much of an attachment's answer to read: its bytes base64, and the rest; an
    answer longer than this is not read further (and the attachment skipped)."""
    return (max(info.size, 0) + 2) // 3 * 4 + _ANSWER_OVERHEAD


def attachment(info: AttachmentInfo, content_bytes: str | None, budget: int
               ) -> Attachment | None:
    """The record of one attachment read, or None if its bytes are missing, not base64
    or more than `budget` (what the message's cap has left)."""
    if content_bytes is None:
        return None
    try:
        raw = base64.b64decode(content_bytes, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) > budget:
        return None
    return Attachment(name=info.name[:1024] or "attachment",
                      content_type=info.content_type[:1024] if info.content_type else None,
                      size=len(raw), content_bytes=content_bytes)
