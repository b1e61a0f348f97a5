"""Conversations: which Customer integration and external user a conversation belongs to.

Kept in the compacted `conversations` topic (key: conversation id) so that any router,
after any restart, can send an agent's answer back to the right customer.
"""

from __future__ import annotations

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


conversation_encoder = msgspec.json.Encoder()
conversation_decoder = msgspec.json.Decoder(ConversationRecord)


class ConversationTable:
    """In-memory fold of the conversations topic (last write wins per key)."""

    def __init__(self) -> None:
        self.by_id: dict[str, ConversationRecord] = {}
        self._by_thread: dict[tuple[str, str], str] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            old = self.by_id.pop(key.decode(errors="replace"), None)
            if old is not None:
                self._unindex(old)
            return
        try:
            rec = conversation_decoder.decode(value)
        except msgspec.DecodeError:
            return
        self.put(rec)

    def put(self, rec: ConversationRecord) -> None:
        old = self.by_id.get(rec.conversation_id)
        if old is not None:
            self._unindex(old)
        self.by_id[rec.conversation_id] = rec
        for integration_id, thread in rec.threads.items():
            self._by_thread[(integration_id, thread)] = rec.conversation_id

    def _unindex(self, rec: ConversationRecord) -> None:
        for integration_id, thread in rec.threads.items():
            self._by_thread.pop((integration_id, thread), None)

    def get(self, conversation_id: str) -> ConversationRecord | None:
        return self.by_id.get(conversation_id)

    def by_thread(self, integration_id: str, thread: str) -> ConversationRecord | None:
        """The conversation a provider thread (e.g. a Slack thread_ts) belongs to."""
        cid = self._by_thread.get((integration_id, thread))
        return self.by_id.get(cid) if cid else None
