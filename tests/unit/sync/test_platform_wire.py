"""The platform contract's wire shapes (pure): auth headers, paths, bodies, pages and
error answers, and what each status means."""

from __future__ import annotations

import base64

import msgspec
import pytest

from switchboard.sync import platform_wire as wire
from switchboard.sync.errors import (
    AuthFailed,
    ConnectorError,
    RateLimited,
    RecordConflict,
    RecordNotFound,
)
from switchboard.sync.records import Account, Contact, EmailLog, Task
from switchboard.sync.status import error_for


def test_auth_is_a_bearer_token_or_basic_with_the_token_as_user_name() -> None:
    assert wire.auth_headers(wire.PlatformAuth(scheme="bearer", token="t0k")) == {
        "authorization": "Bearer t0k"}
    basic = wire.auth_headers(wire.PlatformAuth(scheme="basic", token="t0k"))["authorization"]
    assert basic.startswith("Basic ")
    assert base64.b64decode(basic[6:]) == b"t0k:X"
    assert "t0k" not in repr(wire.PlatformAuth(scheme="basic", token="t0k"))


def test_paths_name_the_resource_and_quote_the_platforms_id() -> None:
    assert wire.record_path("contact") == "/contacts"
    assert wire.record_path("opportunity", "a/b c") == "/opportunities/a%2Fb%20c"
    assert wire.mine_path("account") == "/me/accounts"


@pytest.mark.parametrize("record", [
    Contact(id="c1", modified_at=5, first_name="Ada", email="ada@x.test", tags=["vip"],
            field_modified_at={"first_name": 4}),
    Account(id="a1", modified_at=7, name="Acme", domain="acme.test", phone="1"),
    Task(id="t1", modified_at=9, title="Call", status="done", due_at=10),
    EmailLog(id="e1", modified_at=3, message_id="<m@x>", to=["a@x.test"], direction="out"),
])
def test_a_create_body_is_the_record_without_what_the_platform_assigns(
        record: Contact | Account | Task | EmailLog) -> None:
    body = msgspec.json.decode(wire.create_body(record))
    assert not {"kind", "id", "modifiedAt", "fieldModifiedAt", "deleted"} & set(body)
    # The platform answers the record with its id and time: the same record comes back.
    answer = msgspec.json.encode({**body, "id": record.id, "modifiedAt": record.modified_at,
                                  "fieldModifiedAt": record.field_modified_at})
    kind = {Contact: "contact", Account: "account", Task: "task", EmailLog: "email"}[
        type(record)]
    assert wire.decode_record(kind, answer) == record


def test_an_update_body_names_fields_as_the_wire_does_and_refuses_others() -> None:
    body = wire.update_body("contact", {"first_name": "Ada", "mobile_phone": None})
    assert msgspec.json.decode(body) == {"firstName": "Ada", "mobilePhone": None}
    with pytest.raises(ValueError):
        wire.update_body("contact", {"nickname": "x"})
    with pytest.raises(ValueError):
        wire.update_body("contact", {"modified_at": 1})


def test_a_page_decodes_records_and_tombstones_and_ends_without_a_cursor() -> None:
    body = msgspec.json.encode({"records": [
        {"id": "c1", "modifiedAt": 1, "firstName": "Ada", "somethingElse": {"x": 1}},
        {"id": "c2", "modifiedAt": 2, "deleted": True}], "nextCursor": "abc"})
    page = wire.decode_page("contact", body)
    assert page.cursor == "abc"
    assert page.records == [Contact(id="c1", modified_at=1, first_name="Ada"),
                            Contact(id="c2", modified_at=2, deleted=True)]
    last = wire.decode_page("contact", b'{"records": [], "nextCursor": ""}')
    assert last.records == [] and last.cursor is None
    with pytest.raises(msgspec.ValidationError):
        wire.decode_page("contact", b'{"records": [{"id": "", "modifiedAt": 1}]}')


def test_users_decode_as_the_contracts_user() -> None:
    page = wire.decode_users(b'{"records": [{"orgId": "o", "userId": "u", "email": "e@x"}]}')
    assert [(u.org_id, u.user_id, u.email, u.timezone) for u in page.records] == [
        ("o", "u", "e@x", "UTC")]


def test_an_error_answers_message_whatever_its_shape() -> None:
    assert wire.error_message(b'{"error": {"code": "duplicate", "message": "exists"}}') \
        == "duplicate: exists"
    assert wire.error_message(b"<html>Bad gateway</html>") == "<html>Bad gateway</html>"


@pytest.mark.parametrize(("status", "retry", "exc", "code"), [
    (401, None, AuthFailed, "connector_auth_failed"),
    (403, None, AuthFailed, "connector_auth_failed"),
    (404, None, RecordNotFound, "connector_not_found"),
    (410, None, RecordNotFound, "connector_not_found"),
    (409, None, RecordConflict, "connector_conflict"),
    (429, 7.0, RateLimited, "connector_rate_limited"),
    (429, None, RateLimited, "connector_rate_limited"),
    (503, 2.0, RateLimited, "connector_rate_limited"),
    (503, None, ConnectorError, "connector_unavailable"),
    (500, None, ConnectorError, "connector_unavailable"),
    (422, None, ConnectorError, "connector_refused"),
    (400, None, ConnectorError, "connector_refused"),
])
def test_each_status_is_the_connector_error_it_means(status: int, retry: float | None,
                                                     exc: type, code: str) -> None:
    err = error_for(status, "  the\nside's   words ", retry_after_s=retry, record_id="r1")
    assert type(err) is exc and err.code == code
    assert err.description == "the side's words"
    if isinstance(err, RateLimited):
        assert err.retry_after == (7 if retry == 7.0 else 2 if retry else 5)
    if isinstance(err, RecordNotFound | RecordConflict):
        assert err.record_id == "r1"
