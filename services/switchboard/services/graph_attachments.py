"""A message's or an event's file attachments read from Microsoft Graph, within a byte
budget (the decisions are `switchboard.sync.attachments`).

``GET /me/messages/{id}/attachments?$select=id,name,contentType,size,isInline`` (``/me/
events/{id}/attachments`` for an event) lists them without their bytes; each one
selected is then read alone (``GET …/attachments/{attachmentId}``: a fileAttachment with
``contentBytes``, base64), its answer read no further than its size allows, so an item's
attachments never take more memory than the cap, whatever Graph holds or says.
"""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from switchboard.services.graph_http import GraphHttp
from switchboard.sync.attachments import (
    FILE,
    AttachmentInfo,
    answer_cap,
    attachment,
    select,
)
from switchboard.sync.errors import ConnectorError
from switchboard.sync.graph_wire import GraphAttachment, decode_page
from switchboard.sync.records import Attachment

__all__ = ["MAX_LIST_PAGES", "fetch_attachments"]

# A message has at most a few hundred attachments; a listing that pages on stops here.
MAX_LIST_PAGES = 20
_SELECT = "id,name,contentType,size,isInline"
_one = msgspec.json.Decoder(GraphAttachment)


def _info(a: GraphAttachment) -> AttachmentInfo:
    return AttachmentInfo(id=a.id, name=a.name or "", content_type=a.content_type,
                          size=a.size if a.size is not None else -1,
                          is_file=a.odata_type == FILE, is_inline=bool(a.is_inline))


async def list_attachments(graph: GraphHttp, message_id: str, resource: str = "messages"
                           ) -> list[AttachmentInfo]:
    link = f"/me/{resource}/{quote(message_id, safe='')}/attachments"
    params: dict[str, str] | None = {"$select": _SELECT}
    out: list[AttachmentInfo] = []
    for _ in range(MAX_LIST_PAGES):
        answer = await graph.call("GET", link, params=params)
        try:
            page = decode_page(answer.content, GraphAttachment)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ConnectorError("graph_bad_answer", "Graph's attachment list is not "
                                 "one") from None
        out += [_info(a) for a in page.value]
        if not page.next_link:
            break
        link, params = page.next_link, None
    return out


async def fetch_attachments(graph: GraphHttp, message_id: str, max_bytes: int,
                            resource: str = "messages") -> tuple[list[Attachment], int]:
    """The message's (`resource` "events": the event's) file attachments that fit
    `max_bytes` together, and how many were skipped (too large, not a file, or not read
    whole)."""
    chosen = select(await list_attachments(graph, message_id, resource), max_bytes)
    base = f"/me/{resource}/{quote(message_id, safe='')}/attachments"
    out: list[Attachment] = []
    skipped = len(chosen.skipped)
    budget = max_bytes
    for info in chosen.take:
        answer = await graph.call("GET", f"{base}/{quote(info.id, safe='')}",
                                  read_cap=answer_cap(info))
        got = None
        if not answer.truncated:
            try:
                got = attachment(info, _one.decode(answer.content).content_bytes, budget)
            except (msgspec.DecodeError, msgspec.ValidationError):
                got = None
        if got is None:
            skipped += 1
            continue
        budget -= got.size
        out.append(got)
    return out, skipped
