"""Conversations: which Customer integration and external user a conversation belongs to.

Kept in the compacted `conversations` topic (key: conversation id) so that any router,
after any restart, can send an agent's answer back to the right customer. A conversation
ends after `conversation_timeout_s` without activity: its owner writes a tombstone.

Each process folds the topic into a `ConversationTable`: a small in-memory cache of recent
conversations in front of a local SQLite index of the whole table (a file in a temporary
directory, rebuilt from the topic at every start, so the topic stays the only state). The
cache is bounded; a miss costs one indexed SQLite lookup, not memory per conversation.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections import OrderedDict

import msgspec
from msgspec import Struct


class ConversationRecord(Struct, rename="camel", omit_defaults=True):
    conversation_id: str
    hub_id: str
    customer_integration_id: str
    customer_id: str
    created_at: int
    # Provider thread ids (e.g. Slack thread_ts) keyed by integration id.
    threads: dict[str, str] = msgspec.field(default_factory=dict)
    # When an activity last touched it (ms; 0 = never since created_at). Refreshed at most
    # once per `touch_interval_ms`, so a busy conversation costs no extra writes.
    last_active_at: int = 0
    # Per integration, how far a provider's items were already relayed into the
    # conversation (the last Syncro comment id sent to the customer).
    cursors: dict[str, str] = msgspec.field(default_factory=dict)
    # When it was closed (`CONVERSATION_CLOSED`, ms; 0 = open). The record stays, so what
    # is on its way to the customer still finds them; their next message opens anew.
    closed_at: int = 0

    @property
    def active_at(self) -> int:
        return self.last_active_at or self.created_at


# An activity that ends its conversation (a Syncro ticket resolved): the router marks the
# conversation closed once it has routed it, in order with the conversation's others.
CONVERSATION_CLOSED = "event:conversation_closed"


def reopened_by(rec: ConversationRecord, activity_type: str) -> bool:
    """Whether an activity starts a new conversation over a closed one: a customer
    writing again after the close."""
    return rec.closed_at > 0 and activity_type == "message:customer"


conversation_encoder = msgspec.json.Encoder()
conversation_decoder = msgspec.json.Decoder(ConversationRecord)

_SCHEMA = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, value BLOB NOT NULL,
                            active_at INTEGER NOT NULL);
CREATE INDEX conversations_active ON conversations (active_at);
CREATE TABLE threads (integration_id TEXT NOT NULL, thread TEXT NOT NULL,
                      conversation_id TEXT NOT NULL, PRIMARY KEY (integration_id, thread));
CREATE INDEX threads_conversation ON threads (conversation_id);
"""


def touch_due(rec: ConversationRecord, now_ms: int, interval_ms: int) -> bool:
    """Whether an activity at `now_ms` should write a fresher `last_active_at`."""
    return now_ms - rec.active_at >= interval_ms


class ConversationTable:
    """The fold of the conversations topic (last write wins per key, tombstones delete).

    Memory holds at most `cache_size` records; the rest are in the SQLite file.
    """

    def __init__(self, cache_size: int = 10_000, directory: str | None = None) -> None:
        self._cache_size = max(1, cache_size)
        self._cache: OrderedDict[str, ConversationRecord] = OrderedDict()
        self._dir = tempfile.mkdtemp(prefix="switchboard-conversations-", dir=directory)
        # A cache, rebuilt at start: no journal, no fsync.
        self._db = sqlite3.connect(os.path.join(self._dir, "table.db"),
                                   isolation_level=None, check_same_thread=False)
        self._db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA)

    def close(self) -> None:
        """Close and remove the local file."""
        self._db.close()
        for name in os.listdir(self._dir):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._dir, name))
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def __len__(self) -> int:
        row = self._db.execute("SELECT count(*) FROM conversations").fetchone()
        return int(row[0])

    @property
    def cached(self) -> int:
        return len(self._cache)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record of the topic (None value: a tombstone)."""
        if key is None:
            return
        if value is None:
            self.delete(key.decode(errors="replace"))
            return
        try:
            rec = conversation_decoder.decode(value)
        except msgspec.DecodeError:
            return
        self.put(rec)

    def put(self, rec: ConversationRecord) -> None:
        cid = rec.conversation_id
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute("INSERT OR REPLACE INTO conversations VALUES (?, ?, ?)",
                       (cid, conversation_encoder.encode(rec), rec.active_at))
            db.execute("DELETE FROM threads WHERE conversation_id = ?", (cid,))
            db.executemany("INSERT OR REPLACE INTO threads VALUES (?, ?, ?)",
                           [(iid, thread, cid) for iid, thread in rec.threads.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._remember(rec)

    def delete(self, conversation_id: str) -> None:
        self._cache.pop(conversation_id, None)
        db = self._db
        db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        db.execute("DELETE FROM threads WHERE conversation_id = ?", (conversation_id,))

    def get(self, conversation_id: str) -> ConversationRecord | None:
        rec = self._cache.get(conversation_id)
        if rec is not None:
            self._cache.move_to_end(conversation_id)
            return rec
        row = self._db.execute("SELECT value FROM conversations WHERE id = ?",
                               (conversation_id,)).fetchone()
        if row is None:
            return None
        rec = conversation_decoder.decode(row[0])
        self._remember(rec)
        return rec

    def by_thread(self, integration_id: str, thread: str) -> ConversationRecord | None:
        """The conversation a provider thread (e.g. a Slack thread_ts) belongs to."""
        row = self._db.execute(
            "SELECT conversation_id FROM threads WHERE integration_id = ? AND thread = ?",
            (integration_id, thread)).fetchone()
        return self.get(row[0]) if row is not None else None

    def inactive(self, before_ms: int, limit: int = 1000) -> list[ConversationRecord]:
        """Conversations with no activity since `before_ms`, oldest first."""
        rows = self._db.execute(
            "SELECT value FROM conversations WHERE active_at < ? ORDER BY active_at LIMIT ?",
            (before_ms, limit)).fetchall()
        return [conversation_decoder.decode(row[0]) for row in rows]

    def _remember(self, rec: ConversationRecord) -> None:
        self._cache[rec.conversation_id] = rec
        self._cache.move_to_end(rec.conversation_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
