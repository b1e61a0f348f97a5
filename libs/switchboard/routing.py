"""Who sees an activity: Hubster's routing rules as a pure function.

- customer messages go to the hub's Agent and Bot integrations;
- agent and bot messages go to the conversation's Customer integration;
- System integrations get every activity that matches one of their `events` filters;
- `echo` returns an integration's own activities to it; otherwise a source never
  receives its own activity;
- paused integrations get nothing;
- an activity naming a conversation of another hub (or, from a customer, another
  customer's) goes nowhere (`conversation_allowed`).
"""

from __future__ import annotations

from collections.abc import Iterable

from switchboard.channels import SystemConfig
from switchboard.conversations import ConversationRecord
from switchboard.ids import delivery_id
from switchboard.model import Activity, Delivery, IntegrationType
from switchboard.registry import IntegrationRecord


def matches_filter(event_type: str, filters: Iterable[str]) -> bool:
    """True if `event_type` (e.g. ``message:agent``) matches one of `filters`; a filter
    ending ``.*`` takes a record kind (``syncro:ticket.*``)."""
    family = event_type.split(":", 1)[0]
    return any(f in ("*", event_type, f"{family}:*")
               or (f.endswith(".*") and event_type.startswith(f[:-1])) for f in filters)


def _echo(rec: IntegrationRecord) -> bool:
    return bool(getattr(rec.configuration, "echo", False))


def destinations(
    activity: Activity,
    hub_integrations: Iterable[IntegrationRecord],
    conversation: ConversationRecord | None,
) -> list[IntegrationRecord]:
    """The integrations that should receive `activity`, in a stable order."""
    sender_type = activity.type.split(":", 1)[1] if ":" in activity.type else ""
    out: list[IntegrationRecord] = []
    for rec in hub_integrations:
        if not rec.active:
            continue
        itype = rec.integration_type
        is_source = rec.integration_id == activity.integration_id
        if itype is IntegrationType.SYSTEM:
            if isinstance(rec.configuration, SystemConfig) and matches_filter(
                activity.type, rec.configuration.events
            ):
                out.append(rec)
            continue
        if is_source:
            if _echo(rec):
                out.append(rec)
            continue
        if not activity.type.startswith("message:"):
            continue
        to_agents = sender_type == "customer" and itype in (
            IntegrationType.AGENT, IntegrationType.BOT)
        to_customer = (
            sender_type in ("agent", "bot")
            and itype is IntegrationType.CUSTOMER
            and conversation is not None
            and conversation.customer_integration_id == rec.integration_id
        )
        if to_agents or to_customer:
            out.append(rec)
    out.sort(key=lambda r: r.integration_id)
    return out


def conversation_allowed(activity: Activity, conversation: ConversationRecord | None) -> bool:
    """Whether `activity` may take part in `conversation` (None: a new one).

    Conversations are scoped to their hub: an activity naming another hub's conversation
    is never routed (it would otherwise reach that hub's customer, or write into its
    conversation). A customer speaks only in its own conversations.
    """
    if conversation is None:
        return True
    if conversation.hub_id != activity.hub_id:
        return False
    return not (activity.type == "message:customer"
                and conversation.customer_integration_id != activity.integration_id)


def answerable(activity: Activity, conversation: ConversationRecord | None) -> bool:
    """Whether an agent's or bot's `activity` names a conversation it may answer: one
    that exists, in its own hub. (A customer's activity may start a conversation.)"""
    if activity.type == "message:customer":
        return True
    return conversation is not None and conversation_allowed(activity, conversation)


def deliveries_for(
    activity: Activity,
    hub_integrations: Iterable[IntegrationRecord],
    conversation: ConversationRecord | None,
    now_ms: int,
) -> list[Delivery]:
    """One Delivery per destination, each with its stable webhook id."""
    return [
        Delivery(
            delivery_id=delivery_id(activity.activity_id, dest.integration_id),
            hub_id=activity.hub_id,
            destination_id=dest.integration_id,
            conversation_id=activity.conversation_id,
            activity=activity,
            created_at=now_ms,
        )
        for dest in destinations(activity, hub_integrations, conversation)
    ]
