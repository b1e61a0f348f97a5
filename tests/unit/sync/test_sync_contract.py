"""The connector contract's pieces: its errors in the project's hierarchy, paging,
capabilities, and the canonical records on the wire."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switchboard.errors import BadRequest, Conflict, NotFound, SwitchboardError, Unavailable
from switchboard.sync.connector import Capability, Page, all_records, require, supports
from switchboard.sync.errors import (
    AuthFailed,
    ConnectorError,
    RateLimited,
    RecordConflict,
    RecordNotFound,
    Unsupported,
)
from switchboard.sync.records import Contact, Record


@pytest.mark.parametrize(("exc", "base", "status", "code"), [
    (RecordNotFound("no such contact", "c1"), NotFound, 404, "connector_not_found"),
    (RateLimited("slow down", 2.1), Unavailable, 503, "connector_rate_limited"),
    (AuthFailed("token revoked"), BadRequest, 400, "connector_auth_failed"),
    (RecordConflict("changed meanwhile"), Conflict, 409, "connector_conflict"),
    (Unsupported("no tasks"), BadRequest, 400, "connector_unsupported"),
])
def test_each_failure_kind_is_a_connector_error_with_the_status_it_surfaces_as(
        exc: SwitchboardError, base: type, status: int, code: str) -> None:
    assert isinstance(exc, ConnectorError) and isinstance(exc, base)
    assert exc.status == status
    assert exc.to_body() == {"status": status, "errors": [
        {"code": code, "description": exc.description}]}


def test_rate_limited_carries_whole_seconds_to_wait() -> None:
    assert RateLimited("x", 2.1).retry_after == 3
    assert RateLimited("x", 0).retry_after == 1


class Caps:
    capabilities = frozenset({Capability.TASKS})


def test_capabilities_are_declared_and_required() -> None:
    c: Any = Caps()
    assert supports(c, Capability.TASKS) and not supports(c, Capability.EVENTS)
    require(c, Capability.TASKS)
    with pytest.raises(Unsupported):
        require(c, Capability.ACCOUNTS_BY_DOMAIN)


async def test_all_records_walks_the_pages_and_stops_on_a_looping_cursor() -> None:
    pages = {None: Page(records=[1, 2], cursor="a"), "a": Page(records=[3], cursor="b"),
             "b": Page(records=[4], cursor=None)}
    calls: list[str | None] = []

    async def listing(cursor: str | None) -> Page[int]:
        calls.append(cursor)
        return pages[cursor]

    assert [r async for r in all_records(listing)] == [1, 2, 3, 4]
    assert calls == [None, "a", "b"]

    async def forever(cursor: str | None) -> Page[int]:
        return Page(records=[0], cursor="same")

    assert len([r async for r in all_records(forever)]) == 2
    assert len([r async for r in all_records(forever, max_pages=1)]) == 1


def test_records_are_a_tagged_union_in_camel_case() -> None:
    c = Contact(id="c1", modified_at=5, first_name="Ada", field_modified_at={"first_name": 4})
    wire = msgspec.json.encode(c)
    assert msgspec.json.decode(wire) == {"kind": "contact", "id": "c1", "modifiedAt": 5,
                                         "fieldModifiedAt": {"first_name": 4},
                                         "firstName": "Ada"}
    assert msgspec.json.decode(wire, type=Record) == c
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"kind":"contact","id":"","modifiedAt":1}', type=Record)


def test_each_record_has_its_checked_in_schema_with_the_common_fields() -> None:
    import orjson

    from switchboard.jsonschema import schemas
    from switchboard.sync.records import KINDS

    generated = schemas()
    for kind, typ in KINDS.items():
        schema = orjson.loads(generated[f"sync-{kind}.schema.json"])
        props = schema["$defs"][typ.__name__]["properties"]
        assert {"kind", "id", "modifiedAt", "fieldModifiedAt", "deleted"} <= set(props)
