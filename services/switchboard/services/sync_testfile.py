"""TEST ONLY: the `testfile` connector kind, one side of a sync kept in a local SQLite
file, so a test and a `switchboard serve sync` subprocess see the same records.

Registered only with `SWITCHBOARD_SYNC_TEST_CONNECTORS=1` (off by default). The file's
`meta` table holds the credential the connector must present (`token`), a delay per write
(`delay_ms`, to kill a run half-way), a delay of a create's answer after it landed
(`answer_delay_ms`) and how many calls to refuse with `RateLimited`
(`throttle`). Contacts, accounts and tasks; every write is stamped by a clock that never
goes back, so "changed since T" is exact.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from switchboard import clock
from switchboard.services.sync_connectors import ConnectorContext
from switchboard.sync.connector import Capability, Page, User
from switchboard.sync.errors import AuthFailed, RateLimited, RecordNotFound, Unsupported
from switchboard.sync.matching import match_key
from switchboard.sync.records import (
    KINDS,
    Account,
    CalendarEvent,
    Contact,
    Kind,
    Record,
    Task,
    Value,
)

PAGE = 50
_enc = msgspec.json.Encoder()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (kind TEXT, id TEXT, modified_at INTEGER, body TEXT,
                                    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class TestFileSide:
    """The file itself: what the connector reads and writes, and what a test edits."""

    __test__ = False  # not a pytest class

    def __init__(self, path: str | Path, prefix: str = "R") -> None:
        self.path = str(path)
        self.prefix = prefix
        with self._db() as db:
            # WAL: a reader (the test) never waits on a writer, not even on a worker frozen
            # (SIGSTOP) in the middle of a write.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('prefix', ?)", (prefix,))
            row = db.execute("SELECT value FROM meta WHERE key='prefix'").fetchone()
            self.prefix = row[0]

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def meta(self, key: str, default: str = "") -> str:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def take_throttle(self) -> bool:
        """Whether this call is refused (and one refusal fewer is left)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key='throttle'").fetchone()
            left = int(row[0]) if row else 0
            if left > 0:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('throttle', ?)", (str(left - 1),))
            db.execute("COMMIT")
        return left > 0

    def _tick(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key='clock'").fetchone()
        now = max(clock.now_ms(), (int(row[0]) + 1) if row else 0)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('clock', ?)", (str(now),))
        return now

    def _next_id(self, db: sqlite3.Connection) -> str:
        row = db.execute("SELECT value FROM meta WHERE key='next'").fetchone()
        n = int(row[0]) + 1 if row else 1
        db.execute("INSERT OR REPLACE INTO meta VALUES ('next', ?)", (str(n),))
        return f"{self.prefix}{n:06d}"

    def write(self, kind: Kind, record_id: str | None, values: Mapping[str, Any],
              deleted: bool = False) -> Record:
        """Create (`record_id` None) or change a record, stamped now."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if record_id is None:
                    record_id = self._next_id(db)
                    body: dict[str, Any] = {}
                else:
                    row = db.execute("SELECT body FROM records WHERE kind=? AND id=?",
                                     (kind, record_id)).fetchone()
                    if row is None or (msgspec.json.decode(row[0]).get("deleted")
                                       and not deleted):
                        raise RecordNotFound(f"no {kind} {record_id}", record_id)
                    body = msgspec.json.decode(row[0])
                now = self._tick(db)
                body.update(msgspec.to_builtins(dict(values)))
                body.update(kind=kind, id=record_id, modifiedAt=now)
                if deleted:
                    body["deleted"] = True
                rec = msgspec.convert(body, KINDS[kind])
                db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                           (kind, record_id, now, _enc.encode(rec).decode()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return rec

    def create(self, kind: Kind, **values: Any) -> Record:
        return self.write(kind, None, {_camel(k): v for k, v in values.items()})

    def update(self, kind: Kind, record_id: str, **values: Any) -> Record:
        return self.write(kind, record_id, {_camel(k): v for k, v in values.items()})

    def delete(self, kind: Kind, record_id: str) -> Record:
        return self.write(kind, record_id, {}, deleted=True)

    def get(self, kind: Kind, record_id: str) -> Record:
        with self._db() as db:
            row = db.execute("SELECT body FROM records WHERE kind=? AND id=?",
                             (kind, record_id)).fetchone()
        if row is None:
            raise RecordNotFound(f"no {kind} {record_id}", record_id)
        rec: Record = msgspec.json.decode(row[0], type=KINDS[kind])
        if rec.deleted:
            raise RecordNotFound(f"{kind} {record_id} was deleted", record_id)
        return rec

    def records(self, kind: Kind, since: int | None = None, offset: int = 0,
                limit: int = 1_000_000) -> list[Record]:
        with self._db() as db:
            rows = db.execute(
                "SELECT body FROM records WHERE kind=? AND modified_at>=? "
                "ORDER BY modified_at, id LIMIT ? OFFSET ?",
                (kind, since or 0, limit, offset)).fetchall()
        return [msgspec.json.decode(r[0], type=KINDS[kind]) for r in rows]

    def live(self, kind: Kind) -> list[Record]:
        return [r for r in self.records(kind) if not r.deleted]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


class TestFileConnector:
    """The `Connector` over a `TestFileSide`."""

    __test__ = False

    def __init__(self, side: TestFileSide, token: str) -> None:
        self.side = side
        self.token = token

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.TASKS, Capability.EVENTS, Capability.ACCOUNTS_BY_DOMAIN,
                          Capability.ACCOUNT_WRITES})

    async def _enter(self, write: bool = False) -> None:
        if self.token != self.side.meta("token"):
            raise AuthFailed("the token was refused")
        if self.side.take_throttle():
            raise RateLimited("slow down", retry_after_s=1)
        delay = int(self.side.meta("delay_ms", "0") or 0)
        if write and delay:
            await asyncio.sleep(delay / 1000)

    async def _create(self, kind: Kind, rec: Record) -> Record:
        await self._enter(True)
        values = msgspec.to_builtins(rec)
        for k in ("id", "modifiedAt", "kind", "fieldModifiedAt", "deleted"):
            values.pop(k, None)
        made = self.side.write(kind, None, values)
        # A create that landed but whose answer is late (`answer_delay_ms`): the moment a
        # worker can die with the record made and its pair not yet written.
        late = int(self.side.meta("answer_delay_ms", "0") or 0)
        if late:
            await asyncio.sleep(late / 1000)
        return made

    async def _update(self, kind: Kind, record_id: str, values: Mapping[str, Value]) -> Record:
        await self._enter(True)
        return self.side.write(kind, record_id, {_camel(k): v for k, v in values.items()})

    async def _delete(self, kind: Kind, record_id: str) -> None:
        await self._enter(True)
        self.side.write(kind, record_id, {}, deleted=True)

    async def _page(self, kind: Kind, since: int | None, cursor: str | None) -> Page[Any]:
        await self._enter()
        offset = int(cursor or 0)
        recs = self.side.records(kind, since, offset, PAGE)
        return Page(records=recs, cursor=str(offset + PAGE) if len(recs) == PAGE else None)

    async def _find(self, kind: Kind, by: str, values: Sequence[str]) -> list[Any]:
        await self._enter()
        wanted = {v.casefold() for v in values}
        return [r for r in self.side.live(kind) if (match_key(r, {}, by) or "") in wanted]  # type: ignore[arg-type]

    async def get_me(self) -> User:
        await self._enter()
        return User(org_id="test", user_id=self.side.prefix)

    async def users_by_email(self, emails: Sequence[str]) -> list[User]:
        raise Unsupported("users by e-mail")

    async def create_account(self, account: Account) -> Account:
        return await self._create("account", account)  # type: ignore[return-value]

    async def get_account(self, account_id: str) -> Account:
        await self._enter()
        return self.side.get("account", account_id)  # type: ignore[return-value]

    async def update_account(self, account_id: str, values: Mapping[str, Value]) -> Account:
        return await self._update("account", account_id, values)  # type: ignore[return-value]

    async def delete_account(self, account_id: str) -> None:
        await self._delete("account", account_id)

    async def my_accounts(self, since: int | None = None, cursor: str | None = None
                          ) -> Page[Account]:
        return await self._page("account", since, cursor)

    async def accounts_by_name(self, name: str) -> list[Account]:
        return await self._find("account", "name", [name])

    async def accounts_by_domain(self, domain: str) -> list[Account]:
        return await self._find("account", "domain", [domain])

    async def create_contact(self, contact: Contact) -> Contact:
        return await self._create("contact", contact)  # type: ignore[return-value]

    async def get_contact(self, contact_id: str) -> Contact:
        await self._enter()
        return self.side.get("contact", contact_id)  # type: ignore[return-value]

    async def update_contact(self, contact_id: str, values: Mapping[str, Value]) -> Contact:
        return await self._update("contact", contact_id, values)  # type: ignore[return-value]

    async def delete_contact(self, contact_id: str) -> None:
        await self._delete("contact", contact_id)

    async def my_contacts(self, since: int | None = None, cursor: str | None = None
                          ) -> Page[Contact]:
        return await self._page("contact", since, cursor)

    async def contacts_by_name(self, name: str) -> list[Contact]:
        return []

    async def contacts_by_email(self, emails: Sequence[str]) -> list[Contact]:
        return await self._find("contact", "email", emails)

    async def contacts_by_email_domain(self, domain: str) -> list[Contact]:
        return []

    async def create_email(self, email: Any) -> Any:
        raise Unsupported("e-mail")

    async def update_email(self, email_id: str, values: Mapping[str, Value]) -> Any:
        raise Unsupported("e-mail")

    async def opportunities_for_contacts(self, contact_ids: Sequence[str]) -> list[Any]:
        raise Unsupported("opportunities")

    async def create_task(self, task: Task) -> Task:
        return await self._create("task", task)  # type: ignore[return-value]

    async def get_task(self, task_id: str) -> Task:
        await self._enter()
        return self.side.get("task", task_id)  # type: ignore[return-value]

    async def update_task(self, task_id: str, values: Mapping[str, Value]) -> Task:
        return await self._update("task", task_id, values)  # type: ignore[return-value]

    async def delete_task(self, task_id: str) -> None:
        await self._delete("task", task_id)

    async def my_tasks(self, since: int | None = None, cursor: str | None = None) -> Page[Task]:
        return await self._page("task", since, cursor)

    async def create_event(self, event: CalendarEvent) -> CalendarEvent:
        return await self._create("event", event)  # type: ignore[return-value]

    async def get_event(self, event_id: str) -> CalendarEvent:
        await self._enter()
        return self.side.get("event", event_id)  # type: ignore[return-value]

    async def update_event(self, event_id: str, values: Mapping[str, Value]) -> CalendarEvent:
        return await self._update("event", event_id, values)  # type: ignore[return-value]

    async def delete_event(self, event_id: str) -> None:
        await self._delete("event", event_id)

    async def my_events(self, since: int | None = None, cursor: str | None = None
                        ) -> Page[CalendarEvent]:
        return await self._page("event", since, cursor)

def testfile_connector(ctx: ConnectorContext) -> TestFileConnector:
    """The factory registered as `testfile`: configuration `{"path": …}`, credentials
    `{"token": …}`."""
    path = ctx.configuration.get("path")
    if not isinstance(path, str) or not path:
        raise AuthFailed("testfile: configuration.path is missing")
    return TestFileConnector(TestFileSide(path), ctx.credentials.get("token", ""))
