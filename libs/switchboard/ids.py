"""Stable identifiers: the same provider event always maps to the same ids (invariant 2)."""

from __future__ import annotations

import uuid

# A fixed namespace so ids are reproducible across processes and versions.
NAMESPACE = uuid.UUID("6f1f1c2e-5b0a-4c53-9a55-2f0e8f6f3a11")


def stable_id(*parts: str) -> str:
    """A UUIDv5 over `parts`; equal parts give equal ids everywhere."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def activity_id(integration_id: str, provider_event_id: str) -> str:
    return stable_id("activity", integration_id, provider_event_id)


def delivery_id(activity_id: str, destination_id: str) -> str:
    return "msg_" + stable_id("delivery", activity_id, destination_id).replace("-", "")


def customer_conversation_id(integration_id: str, external_user_id: str) -> str:
    """One conversation per (Customer integration, external user)."""
    return stable_id("conversation", integration_id, external_user_id)


def new_id() -> str:
    return str(uuid.uuid4())
