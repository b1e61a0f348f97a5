"""The loopback Graph's message and event attachments (part of tests/fakes/graph.py), as
Graph v1.0 serves them (``/me/events/{id}/attachments`` as for a message):

- ``GET /me/messages/{id}/attachments`` → ``{"value": [attachment…]}``, paged like the
  other collections; with ``$select`` only the selected properties (and ``@odata.type``,
  ``id``), so a client can list them without their bytes;
- ``GET /me/messages/{id}/attachments/{attachmentId}`` → the attachment: a
  ``#microsoft.graph.fileAttachment`` with ``name``, ``contentType``, ``size`` (Graph's,
  a little more than the bytes: it counts the MIME part), ``isInline``, ``contentId``,
  ``lastModifiedDateTime`` and ``contentBytes`` (base64); an
  ``#microsoft.graph.itemAttachment`` (an attached Outlook item) has no bytes.

Knobs: `attach` (a file), `attach_item` (an Outlook item); `reads` counts the GETs of
single attachments (what a client loaded).
"""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from tests.fakes.graph import FakeGraph

# What Graph's `size` adds to the bytes of a file attachment (its MIME headers).
SIZE_OVERHEAD = 180


class GraphAttachments:
    def __init__(self, graph: FakeGraph) -> None:
        self.graph = graph
        self.by_message: dict[str, list[dict[str, Any]]] = {}
        self.reads: list[str] = []
        self._ids = itertools.count(1)

    def _add(self, message_id: str, item: dict[str, Any]) -> dict[str, Any]:
        where = "events" if message_id in self.graph.items.get("events", {}) else "messages"
        self.graph.items[where][message_id]["hasAttachments"] = True
        item = {"id": f"AAMkAGI2ATT{next(self._ids):06d}=",
                "lastModifiedDateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                **item}
        self.by_message.setdefault(message_id, []).append(item)
        return item

    def attach(self, message_id: str, name: str, content: bytes,
               content_type: str = "application/octet-stream", *, inline: bool = False
               ) -> dict[str, Any]:
        return self._add(message_id, {
            "@odata.type": "#microsoft.graph.fileAttachment", "name": name,
            "contentType": content_type, "size": len(content) + SIZE_OVERHEAD,
            "isInline": inline, "contentId": None, "contentLocation": None,
            "contentBytes": base64.b64encode(content).decode()})

    def attach_item(self, message_id: str, name: str) -> dict[str, Any]:
        return self._add(message_id, {
            "@odata.type": "#microsoft.graph.itemAttachment", "name": name,
            "contentType": None, "size": 4321, "isInline": False})

    def handle(self, request: Request, message_id: str, rest: list[str],
               resource: str = "messages") -> Response:
        from tests.fakes.graph import _error

        if message_id not in self.graph.items.get(resource, {}):
            return _error(404, "ErrorItemNotFound", "The specified object was not found "
                          "in the store.")
        found = self.by_message.get(message_id, [])
        if request.method != "GET" or len(rest) > 1:
            return _error(405, "ErrorInvalidRequest", "The OData request is not supported.")
        if rest:
            for item in found:
                if item["id"] == rest[0]:
                    self.reads.append(item["id"])
                    return self.graph._json(item)
            return _error(404, "ErrorItemNotFound", "The specified object was not found "
                          "in the store.")
        select = request.query_params.get("$select")
        shown = found
        if select:
            keep = {"@odata.type", "id", *select.split(",")}
            shown = [{k: v for k, v in x.items() if k in keep} for x in found]
        return self.graph._json({
            "@odata.context": f"{self.graph.url}/$metadata#users('{self.graph.me['id']}')/"
                              f"{resource}('{message_id}')/attachments", "value": shown})
