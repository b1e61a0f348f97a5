"""What a module's writes to the portal carry beyond its synced fields (the runner asks
before each create and update; the decisions are pure, in `switchboard.sync.companies`
and `switchboard.sync.attachments`):

- contacts with ``createCompany`` (seed 000's ``contCreateCompany``): the contact's
  company account (``account_id``), the one kept for its company name in the pair index
  (`companies.COMPANIES`), else found by name, then by the domain of its e-mail, else
  made — then kept, so a re-run neither looks up nor makes it again. One company at a
  time (a lock per name), so concurrent creates never make it twice;
- calendar events with ``fetchAttachments`` (``calFetchAttachments``): the mailbox
  event's file attachments, read (`event_attachments`) within
  ``SWITCHBOARD_SYNC_ATTACHMENT_MAX_BYTES`` an event just before its write, never more
  than the run's create window of events at once; the module's counts say how many were
  copied and skipped.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

import msgspec

from switchboard.kafka import SYNC_PAIRS
from switchboard.sync.attachments import AttachmentCounts, cap
from switchboard.sync.companies import (
    COMPANIES,
    CompanyCounts,
    Filing,
    company_pair,
    filings,
    known,
    new_account,
    pick,
)
from switchboard.sync.connector import Capability, supports
from switchboard.sync.ops import Create, Update
from switchboard.sync.options import flows
from switchboard.sync.records import Account, Contact, Record, Value
from switchboard.sync.tables import pair_key

if TYPE_CHECKING:
    from switchboard.services.sync_runner import Planned, Runner

__all__ = ["WriteHooks"]

_enc = msgspec.json.Encoder()


class WriteHooks:
    """The extras of one module's writes in one run."""

    def __init__(self, runner: Runner, p: Planned) -> None:
        self.runner = runner
        self.p = p
        kind = p.plan.kind
        self.filings: dict[tuple[str, str], Filing] = {}
        if kind == "contact":
            for f in filings(p.plan.ops, p.options, self._emails()):
                op = p.plan.ops[f.index]
                self.filings[_where(op)] = f
        self.companies = runner.store.pairs.index(runner.profile.profile_id, COMPANIES)
        self._locks: dict[str, asyncio.Lock] = {}
        fetch = getattr(runner.connectors["mailbox"], "event_attachments", None)
        self.fetch = fetch if (kind == "event" and p.options.fetch_attachments
                               and flows(p.options.direction, "mailbox")
                               and callable(fetch)) else None
        self.attachments = AttachmentCounts()
        self.company_counts = CompanyCounts()

    def _emails(self) -> dict[str, str | None]:
        """The e-mail of each portal contact an update may file (its mailbox partner's)."""
        index = self.runner.index("contact", self.p.module)
        mailbox = {r.id: r for r in self.p.changes.mailbox if isinstance(r, Contact)}
        out: dict[str, str | None] = {}
        for op in self.p.plan.ops:
            if isinstance(op, Update) and op.side == "portal":
                pair = index.find("contact", "portal", op.id)
                rec = mailbox.get(pair.mailbox.id) if pair is not None else None
                out[op.id] = rec.email if rec is not None else None
        return out

    async def create(self, op: Create, record: Record) -> Record:
        """`record` (about to be created on `op.side`) with what it carries beyond the
        synced fields."""
        extra = await self._extra(op, op.source_id)
        return msgspec.structs.replace(record, **extra) if extra else record

    async def update(self, op: Update, values: dict[str, Value]) -> dict[str, Value]:
        """`values` (about to be written to `op.side`'s `op.id`) with the extras."""
        if op.side != "portal":
            return values
        source: str | None = None
        if self.fetch is not None:
            pair = self.runner.index("event", self.p.module).find("event", "portal", op.id)
            source = pair.mailbox.id if pair is not None else None
        return {**values, **await self._extra(op, source)}

    async def _extra(self, op: Create | Update, mailbox_id: str | None) -> dict[str, Any]:
        if op.side != "portal":
            return {}
        filing = self.filings.get(_where(op))
        if filing is not None:
            return {"account_id": await self._account(filing)}
        if self.fetch is not None and mailbox_id is not None:
            limit = cap(self.runner.store.runtime.settings.sync_attachment_max_bytes)
            got, skipped = await self.runner.call("mailbox", functools.partial(
                self.fetch, mailbox_id, limit))
            self.attachments.copied += len(got)
            self.attachments.skipped += skipped
            return {"attachments": got}
        return {}

    async def _account(self, filing: Filing) -> str:
        """The company's portal account: kept, found or made (then kept)."""
        async with self._locks.setdefault(filing.key, asyncio.Lock()):
            found = known(self.companies, filing.key)
            if found is not None:
                return found
            runner = self.runner
            portal = runner.connectors["portal"]
            by_name = await runner.call("portal", functools.partial(
                portal.accounts_by_name, filing.name))
            by_domain: list[Account] = []
            if pick(filing, by_name, ()) is None and filing.domain \
                    and supports(portal, Capability.ACCOUNTS_BY_DOMAIN):
                by_domain = await runner.call("portal", functools.partial(
                    portal.accounts_by_domain, filing.domain))
            account = pick(filing, by_name, by_domain)
            if account is not None:
                self.company_counts.found += 1
            else:
                account = await runner.call("portal", functools.partial(
                    portal.create_account, new_account(filing)))
                self.company_counts.created += 1
            pair = company_pair(filing, account)
            await runner.store.write(SYNC_PAIRS, pair_key(
                runner.profile.profile_id, COMPANIES, pair), _enc.encode(pair),
                applied=False)
            self.companies.add(pair)
            return account.id

    def finish(self) -> None:
        """The module's counts with the attachments copied and skipped, and the company
        accounts found and made."""
        counts = self.runner.counts.get(self.p.module)
        if counts is None:
            return
        if self.fetch is not None:
            counts = msgspec.structs.replace(counts, attachments=self.attachments)
        if self.p.plan.kind == "contact" and self.p.options.create_company:
            counts = msgspec.structs.replace(counts, companies=self.company_counts)
        self.runner.counts[self.p.module] = counts


def _where(op: Create | Update | Any) -> tuple[str, str]:
    return (op.side, op.source_id) if isinstance(op, Create) else (op.side, op.id)
