"""How a mailbox's records are read and written on Microsoft Graph: the plumbing under
`graph_connector.GraphConnector` (its base class), for any kind of record.

**Changes and deletes come from Graph's delta queries.** A listing's first call starts a
round (every record); its last page's ``@odata.deltaLink`` is kept in `delta_links`, and
the next listing with a `since` continues from it: only what changed, deletes included
(``@removed``, stamped with the connector's clock). A runner persists `delta_links`
beside its watermark once a run has finished and passes them back next time; without
them a listing starts a new round (correct, only slower). `since` still drops records
older than it. Page cursors are Graph's ``@odata.nextLink`` URLs.

**Writes are conditional.** An update or delete of a record this connector read sends
its ``@odata.etag`` as If-Match; Graph's 412 (changed in the mailbox meanwhile) is
`RecordConflict`, and the runner plans again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from switchboard.services.graph_http import GraphHttp
from switchboard.services.graph_token import GraphTokens
from switchboard.services.http_client import HttpClient
from switchboard.sync.connector import Page
from switchboard.sync.errors import ConnectorError
from switchboard.sync.graph_wire import (
    GraphContact,
    GraphEvent,
    GraphMessage,
    GraphPage,
    GraphTodoTask,
    decode_page,
)
from switchboard.sync.records import Record

__all__ = ["GraphRecords", "decode", "quote"]

R = TypeVar("R", bound=Record)
W = TypeVar("W", GraphContact, GraphEvent, GraphTodoTask, GraphMessage)
T = TypeVar("T")


def quote(value: str) -> str:
    """An OData string literal."""
    return "'" + value.replace("'", "''") + "'"


def decode(content: bytes, item: type[T]) -> T:
    """One Graph answer as `item`; an unreadable one is ``graph_bad_answer``."""
    try:
        return msgspec.json.decode(content, type=item)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConnectorError("graph_bad_answer", f"Graph sent an unreadable answer: {exc}"
                             ) from None


class GraphRecords:
    """Conditional reads and writes, paged and delta listings, on one user's Graph."""

    def __init__(self, http: HttpClient, token: str | GraphTokens, *, base_url: str,
                 timeout_s: float, page_size: int,
                 delta_links: Mapping[str, str] | None,
                 now: Callable[[], int]) -> None:
        self.graph = GraphHttp(http, token, base_url, timeout_s=timeout_s,
                               page_size=page_size)
        # Resource → the deltaLink of its last finished round (see the module docstring).
        self.delta_links: dict[str, str] = dict(delta_links or {})
        self._now = now
        self._etags: dict[str, str] = {}

    def _remember(self, item: object) -> None:
        etag = getattr(item, "etag", None)
        if isinstance(etag, str) and etag:
            self._etags[getattr(item, "id", "")] = etag

    def _if_match(self, record_id: str) -> dict[str, str]:
        etag = self._etags.get(record_id)
        return {"if-match": etag} if etag else {}

    async def _one(self, path: str, item: type[W], record_id: str) -> W:
        resp = await self.graph.call("GET", path, record_id=record_id)
        out = decode(resp.content, item)
        self._remember(out)
        return out

    async def _write(self, method: str, path: str, body: dict[str, Any], item: type[W],
                     record_id: str | None = None) -> W:
        headers = self._if_match(record_id) if record_id else None
        resp = await self.graph.call(method, path, json=body, headers=headers,
                                     record_id=record_id)
        out = decode(resp.content, item)
        self._remember(out)
        return out

    async def _delete(self, path: str, record_id: str) -> None:
        await self.graph.call("DELETE", path, headers=self._if_match(record_id),
                              record_id=record_id)
        self._etags.pop(record_id, None)

    async def _page(self, link: str, params: Mapping[str, str] | None, item: type[T]
                    ) -> GraphPage[T]:
        resp = await self.graph.call("GET", link, params=params)
        try:
            page = decode_page(resp.content, item)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConnectorError("graph_bad_answer", f"Graph sent an unreadable page: {exc}"
                                 ) from None
        for x in page.value:
            self._remember(x)
        return page

    async def _delta(self, key: str, first: str, params: Mapping[str, str] | None,
                     item: type[W], convert: Callable[[W], R | None], since: int | None,
                     cursor: str | None) -> Page[R]:
        """One page of a delta listing (see the module docstring)."""
        if cursor is not None:
            page = await self._page(cursor, None, item)
        elif since is not None and key in self.delta_links:
            page = await self._page(self.delta_links[key], None, item)
        else:
            page = await self._page(first, params, item)
        records = [r for r in map(convert, page.value) if r is not None
                   if since is None or r.deleted or r.modified_at >= since]
        if page.next_link:
            return Page(records=records, cursor=page.next_link)
        if page.delta_link:
            self.delta_links[key] = page.delta_link
        return Page(records=records)

    async def _all(self, path: str, params: Mapping[str, str] | None, item: type[T]
                   ) -> list[T]:
        out: list[T] = []
        page = await self._page(path, params, item)
        out += page.value
        for _ in range(10_000):
            if not page.next_link:
                break
            page = await self._page(page.next_link, None, item)
            out += page.value
        return out
