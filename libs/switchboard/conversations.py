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

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            self.by_id.pop(key.decode(errors="replace"), None)
            return
        try:
            rec = conversation_decoder.decode(value)
        except msgspec.DecodeError:
            return
        self.by_id[rec.conversation_id] = rec

    def get(self, conversation_id: str) -> ConversationRecord | None:
        return self.by_id.get(conversation_id)
