"""Syncro tickets ⇄ conversations: the I/O around `switchboard.providers.syncro_sync`.

- `SyncroSender` (the deliverer's sender for Syncro integrations): a customer's first
  message finds or creates the Syncro customer and opens a ticket with the message as
  its first comment; later messages are comments on that ticket. The ticket is recorded
  on the conversation (``threads``, the compacted ``conversations`` topic) before the
  delivery counts as delivered, so the next message, in any process, finds it.
- `TicketSync` (called by the plugin for each ticket webhook): a technician's new public
  comments become ``message:agent`` activities of the ticket's conversation, and a
  resolved ticket ``event:conversation_closed``; all durable before Syncro's webhook is
  answered. How far comments were relayed is the conversation's cursor.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

import msgspec

from switchboard import clock
from switchboard.channels import SyncroConfig
from switchboard.conversations import ConversationRecord
from switchboard.errors import BadRequest, SwitchboardError, Unavailable
from switchboard.model import Delivery
from switchboard.outbound import SKIPPED, Attempt
from switchboard.providers import syncro_idempotency as idem
from switchboard.providers import syncro_sync as sync
from switchboard.providers.syncro_webhooks import SyncroWebhook, event_type
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome
from switchboard.sealing import open_config_secret
from switchboard.services.channels.syncro_client import SyncroClient
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

# Deliveries this process already tried: a new try looks for the marker before it
# writes (an earlier one may have written and then timed out).
_TRIED_SIZE = 10_000
# A delivery older than this may have been tried by another process before a restart or
# rebalance: look first too (a lookup costs a request; a duplicate ticket costs more).
_FRESH_MS = 30_000
# Pages of a customer search or of a customer's tickets read at most.
_SEARCH_PAGES = 3
# The deliverer that opened a ticket records it just after Syncro answered: a webhook
# racing that write gets a moment (well within Syncro's webhook timeout).
LINK_GRACE_S = (0.0, 0.25, 0.5)
REOPEN_STATUS = "In Progress"


def _attempt_of(exc: SwitchboardError) -> Attempt:
    if isinstance(exc, Unavailable):
        return Attempt(outcome=Outcome.RETRY, reason=exc.code,
                       retry_after=float(exc.retry_after))
    return Attempt(outcome=Outcome.PERMANENT, status=exc.status, reason=exc.code,
                   response=exc.description.encode()[:1024])


def _ticket_id(ticket: dict[str, Any]) -> str:
    tid = ticket.get("id")
    if isinstance(tid, bool) or not isinstance(tid, int | str) or tid == "":
        raise BadRequest("invalid_provider_answer", "Syncro's ticket has no id")
    return str(tid)


class SyncroSender:
    """Writes customer messages to Syncro tickets (one attempt per call)."""

    def __init__(self, runtime: Runtime, client: SyncroClient, tickets: TicketSync) -> None:
        self.runtime = runtime
        self.client = client
        self.tickets = tickets
        self._tried: OrderedDict[str, None] = OrderedDict()

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        activity = delivery.activity
        cfg = destination.configuration
        if not isinstance(cfg, SyncroConfig):
            return Attempt(outcome=Outcome.PERMANENT, reason="not_a_syncro_integration")
        if sync.plan_customer_message(activity, "") is sync.Step.SKIP:
            return Attempt(outcome=Outcome.DELIVERED, reason=SKIPPED)
        iid = destination.integration_id
        store = self.runtime.conversations
        try:
            conv = store.get(delivery.conversation_id)
            if conv is None or iid not in conv.threads:
                # Another process may have opened the ticket before a rebalance.
                await store.sync()
                conv = store.get(delivery.conversation_id)
        except Unavailable:
            return Attempt(outcome=Outcome.RETRY, reason="conversations_unavailable")
        if conv is None:
            return Attempt(outcome=Outcome.PERMANENT, reason="unknown_conversation")
        try:
            token = open_config_secret(self.runtime.sealer, destination, "api_token") or ""
        except (SwitchboardError, ValueError) as exc:
            log.error("delivery %s: API token of %s unusable (%s)", delivery.delivery_id,
                      iid, type(exc).__name__)
            return Attempt(outcome=Outcome.RETRY, reason="api_token_unusable")
        retried = self._retried(delivery)
        ticket_id = conv.threads.get(iid)
        try:
            if sync.plan_customer_message(activity, ticket_id) is sync.Step.COMMENT:
                assert ticket_id is not None and activity.message is not None
                await self.client.add_comment(
                    cfg.subdomain, token, ticket_id,
                    subject=sync.comment_subject(activity.channel_id, activity.sender),
                    body=sync.comment_body(activity.message), key=delivery.delivery_id,
                    hidden=cfg.comment_hidden, retried=retried)
            else:
                await self._open(delivery, destination, token, conv, retried)
        except SwitchboardError as exc:
            return _attempt_of(exc)
        self._tried.pop(delivery.delivery_id, None)
        return Attempt(outcome=Outcome.DELIVERED, status=201)

    def _retried(self, delivery: Delivery) -> bool:
        did = delivery.delivery_id
        seen = did in self._tried
        self._tried[did] = None
        self._tried.move_to_end(did)
        while len(self._tried) > _TRIED_SIZE:
            self._tried.popitem(last=False)
        return seen or clock.now_ms() - delivery.created_at > _FRESH_MS

    async def _open(self, delivery: Delivery, destination: IntegrationRecord, token: str,
                    conv: ConversationRecord, retried: bool) -> None:
        """The conversation's first message: customer, ticket (new or reopened), link."""
        cfg = destination.configuration
        assert isinstance(cfg, SyncroConfig)
        iid = destination.integration_id
        activity = delivery.activity
        assert activity.message is not None
        sub = cfg.subdomain
        customer = await self._customer(cfg, token, delivery)
        subject = sync.comment_subject(activity.channel_id, activity.sender)
        body = sync.comment_body(activity.message)
        ticket: dict[str, Any] | None = None
        cursor = 0
        if cfg.reopen:
            tickets = await self.client.list_all(
                sub, token, "/tickets", "tickets", {"customer_id": str(customer["id"])},
                max_pages=_SEARCH_PAGES)
            previous = sync.pick_reopen(tickets)
            if previous is not None:
                ticket = dict(previous)
                tid = _ticket_id(ticket)
                if sync.needs_reopening(ticket):
                    await self.client.call(sub, token, "PUT", f"/tickets/{tid}", json={
                        "status": cfg.default_ticket_status or REOPEN_STATUS})
                comment = await self.client.add_comment(
                    sub, token, tid, subject=subject, body=body, key=delivery.delivery_id,
                    hidden=cfg.comment_hidden, retried=retried)
                # Everything on it before was seen in its earlier conversation.
                cursor = max(sync.latest_comment_id(ticket),
                             sync.latest_comment_id({"comments": [comment]}))
        if ticket is None:
            fields = sync.ticket_fields(
                customer["id"], sync.ticket_subject(activity.message, activity.sender),
                cfg.default_ticket_status, cfg.problem_type)
            ticket = await self.client.create_ticket(
                sub, token, fields, comment_subject=subject, comment_body=body,
                key=delivery.delivery_id, hidden=cfg.comment_hidden, retried=retried)
            # A new ticket's comments are all this conversation's: relay from the start.
            cursor = 0
        tid = _ticket_id(ticket)
        linked = await self._link(conv, iid, tid, cursor)
        # A technician may have answered while this delivery was being retried (its
        # webhook found no conversation yet): what the ticket shows now goes out.
        await self.tickets.relay(destination, linked, ticket, tid, resolved=False,
                                 now_ms=clock.now_ms())

    async def _customer(self, cfg: SyncroConfig, token: str, delivery: Delivery
                        ) -> dict[str, Any]:
        """The Syncro customer who wrote: found by phone, e-mail or name, else created
        (once: its notes carry the marker, and the search is the lookup)."""
        activity = delivery.activity
        lookup = sync.customer_lookup(activity)
        if lookup == sync.CustomerLookup():
            lookup = sync.CustomerLookup(name=activity.sender.id)
        params = sync.search_params(lookup) or {}

        async def search() -> list[dict[str, Any]]:
            return await self.client.list_all(cfg.subdomain, token, "/customers",
                                              "customers", params, max_pages=_SEARCH_PAGES)

        hit = sync.match_customer(await search(), lookup)
        if hit is not None:
            return dict(hit)
        key = f"customer\x1f{delivery.delivery_id}"
        label = sync.comment_subject(activity.channel_id, activity.sender)
        note = idem.mark(f"Created by Switchboard: {label}", idem.token_for(key))
        body = sync.new_customer(lookup, activity.sender.id, note)

        async def marked() -> list[dict[str, Any]]:
            # The marker is in the notes: what `find_marked` reads is the body.
            return [{**r, "body": r.get("notes")} for r in await search()]

        answer = await self.client.create_idempotent(cfg.subdomain, token, "/customers",
                                                     body, key, marked)
        customer = answer.get("customer", answer)
        if not isinstance(customer, dict) or customer.get("id") in (None, ""):
            raise BadRequest("invalid_provider_answer", "Syncro's customer has no id")
        return customer

    async def _link(self, conv: ConversationRecord, iid: str, ticket_id: str,
                    cursor: int) -> ConversationRecord:
        """Record the ticket (and where relaying starts) on the conversation, durably.
        Unavailable: the retry finds the ticket by its marker and records it then."""
        store = self.runtime.conversations
        current = store.get(conv.conversation_id) or conv
        if current.threads.get(iid) == ticket_id:
            # A retry after the link was written (and maybe comments relayed since).
            cursor = max(cursor, sync.parse_cursor(current.cursors.get(iid)))
        linked = msgspec.structs.replace(
            current, threads={**current.threads, iid: ticket_id},
            cursors={**current.cursors, iid: str(cursor)})
        await store.put(linked)
        return linked


class TicketSync:
    """A ticket webhook's effect on the ticket's conversation."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def on_webhook(self, rec: IntegrationRecord, hook: SyncroWebhook,
                         now_ms: int) -> int:
        """Publish the technician's new public comments as ``message:agent`` and, if
        the ticket is resolved, ``event:conversation_closed`` (each durable); returns how
        many activities were published. Unavailable if the broker is."""
        kind = event_type(hook)
        if kind is None or not kind.startswith("syncro:ticket."):
            return 0
        ticket = hook.attributes
        if not sync.hub_ticket(ticket):
            return 0  # a ticket no conversation opened: nothing to look up
        resolved = sync.is_resolution(kind, ticket)
        if not resolved and not sync.new_technician_comments(ticket, 0):
            return 0  # the hub's own comments only (its ticket just created, …)
        tid = str(ticket.get("id"))
        conv = await self._conversation(rec.integration_id, tid)
        if conv is None:
            return 0  # a ticket that is no conversation's
        return await self.relay(rec, conv, ticket, tid, resolved=resolved, now_ms=now_ms)

    async def relay(self, rec: IntegrationRecord, conv: ConversationRecord,
                    ticket: dict[str, Any], tid: str, *, resolved: bool, now_ms: int) -> int:
        """Publish what of `ticket` the conversation has not had yet, then advance its
        cursor; returns how many activities were published."""
        iid = rec.integration_id
        cursor = sync.parse_cursor(conv.cursors.get(iid))
        activities = sync.agent_activities(
            sync.new_technician_comments(ticket, cursor), hub_id=rec.hub_id,
            integration_id=iid, conversation_id=conv.conversation_id, ticket_id=tid,
            now_ms=now_ms)
        if resolved and not conv.closed_at:
            activities.append(sync.closed_activity(
                hub_id=rec.hub_id, integration_id=iid, conversation_id=conv.conversation_id,
                opened_at=conv.created_at, ticket=ticket, ticket_id=tid, now_ms=now_ms))
        for activity in activities:
            # In order, on the conversation's partition: the last comment before the
            # close reaches the customer before the conversation closes.
            await self.runtime.publish(activity)
        after = sync.cursor_after(ticket, cursor)
        if after > cursor:
            # After publishing: a webhook whose cursor did not get written is relayed
            # again under the same activity ids, never lost.
            store = self.runtime.conversations
            current = store.get(conv.conversation_id) or conv
            if sync.parse_cursor(current.cursors.get(iid)) < after:
                await store.put(msgspec.structs.replace(
                    current, cursors={**current.cursors, iid: str(after)}))
        return len(activities)

    async def _conversation(self, iid: str, ticket_id: str) -> ConversationRecord | None:
        # Synced first: the cursor of the latest record, whichever process wrote it.
        store = self.runtime.conversations
        conv = None
        for delay in LINK_GRACE_S:
            await asyncio.sleep(delay)
            await store.sync()
            conv = store.by_thread(iid, ticket_id)
            if conv is not None:
                break
        return conv
