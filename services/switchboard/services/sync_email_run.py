"""The `email` module of a run: e-mail logging, one way, mailbox → portal.

Reads the mailbox's messages since the watermark (`my_emails`, a mailbox connector's
read-only listing), looks their addresses up as portal contacts, plans with
`switchboard.sync.email_log` and applies: contacts (and accounts) made for unknown
addresses when the options ask, the open opportunities of the matched contacts, then
``createEmail`` — each logged message's pair (keyed by Message-ID) durable before the
next, so a re-run, a replay or a run killed half-way logs nothing twice. (A worker killed
between the portal's answer and that pair write would log that one message again: the
contract has no lookup of logged e-mails to match it by.)

With ``fetchAttachments`` each logged message carries its file attachments, read from
the mailbox (`email_attachments`) within ``SWITCHBOARD_SYNC_ATTACHMENT_MAX_BYTES`` a
message; the module's counts say how many were copied and skipped.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import msgspec

from switchboard.sync.attachments import AttachmentCounts, cap
from switchboard.sync.connector import Capability, all_records, supports
from switchboard.sync.email_log import (
    addresses,
    decide,
    domain_of,
    log_key,
    log_record,
    logged_pair,
    new_account,
    new_contact,
    plan_emails,
)
from switchboard.sync.ops import Create, Plan, Watermark
from switchboard.sync.options import ModuleOptions
from switchboard.sync.records import Contact, EmailLog, OpportunityRef

if TYPE_CHECKING:
    from switchboard.services.sync_runner import Runner
    from switchboard.sync.profiles import Module

__all__ = ["EmailRun"]

LOOKUP_BATCH = 50


class EmailRun:
    """One run's e-mail logging: `prepare` reads and plans, `refresh` plans again (after
    other modules wrote contacts), `apply` logs."""

    def __init__(self, runner: Runner, module: Module, options: ModuleOptions,
                 old: Watermark, start: Watermark) -> None:
        self.runner = runner
        self.module = module
        self.options = options
        self.old = old
        self.start = start
        self.me = ""
        self.emails: list[EmailLog] = []
        self.known: dict[str, Contact] = {}
        self.plan = Plan(kind="email", ops=[], pairs=[], unpaired=[], matched=[],
                         conflicts=[], watermark=old)
        self.attachments = AttachmentCounts()

    async def prepare(self) -> bool:
        """Read the messages and plan; False if the sides cannot log e-mail (the portal
        does not declare it, or the mailbox has no mail to read)."""
        portal, mailbox = self.runner.connectors["portal"], self.runner.connectors["mailbox"]
        listing = getattr(mailbox, "my_emails", None)
        if not supports(portal, Capability.EMAIL) or not callable(listing):
            return False
        me = await self.runner.call("mailbox", mailbox.get_me)
        self.me = me.email
        since = self.start.mailbox or None

        async def page(cursor: str | None) -> Any:
            return await self.runner.call("mailbox", lambda: listing(since, cursor))

        self.emails = [r async for r in all_records(page) if isinstance(r, EmailLog)]
        await self.refresh()
        return True

    async def refresh(self) -> None:
        """Look the messages' addresses up on the portal and plan."""
        index = self.runner.index("email", self.module)
        logging = self.options.email
        wanted = sorted({a for e in self.emails
                         if decide(e, self.me, {}, logging, index).skip != "logged"
                         for a in addresses(e, self.me, logging)})
        portal = self.runner.connectors["portal"]
        self.known = {}
        for i in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[i:i + LOOKUP_BATCH]
            found = await self.runner.call("portal", functools.partial(
                portal.contacts_by_email, batch))
            for c in found:
                if c.email and not c.deleted:
                    self.known.setdefault(c.email.strip().casefold(), c)
        self.plan, _ = plan_emails(self.emails, self.me, self.known, logging, index,
                                   self.start, self.options.overlap_ms)

    async def apply(self) -> None:
        by_key = {op.source_id: op for op in self.plan.ops if isinstance(op, Create)}
        emails: dict[str, EmailLog] = {}
        for e in self.emails:
            if log_key(e) in by_key:
                emails.setdefault(log_key(e), e)
        accounts: dict[str, str | None] = {}
        for key, op in by_key.items():
            index = self.runner.index("email", self.module)
            d = decide(emails[key], self.me, self.known, self.options.email, index)
            if d.skip is None:
                for address in d.create:
                    if address not in self.known:
                        self.known[address] = await self._contact(address, accounts)
                contacts = [self.known[a] for a in (*d.matched, *d.create)]
                deals = await self._deals(contacts)
                record = log_record(op.values, contacts, deals, self.options.email)
                record = await self._attach(emails[key], record)
                portal = self.runner.connectors["portal"]
                made = await self.runner.call("portal", functools.partial(
                    portal.create_email, record))
                # Durable before the next: this message is never logged again.
                await self.runner.write_pair(self.module,
                                             logged_pair(op, made.id, made.modified_at))
            await self.runner.tick()
        await self.runner.write_watermark(self.module, self.old, self.plan.watermark)
        if self._fetcher() is not None:
            counts = self.runner.counts.get(self.module)
            if counts is not None:
                self.runner.counts[self.module] = msgspec.structs.replace(
                    counts, attachments=self.attachments)

    def _fetcher(self) -> Any:
        """The mailbox's attachment reader, when the options ask for attachments."""
        fetch = getattr(self.runner.connectors["mailbox"], "email_attachments", None)
        return fetch if self.options.email.fetch_attachments and callable(fetch) else None

    async def _attach(self, email: EmailLog, record: EmailLog) -> EmailLog:
        """`record` with the message's attachments (those within the cap)."""
        fetch = self._fetcher()
        if fetch is None:
            return record
        limit = cap(self.runner.store.runtime.settings.sync_attachment_max_bytes)
        got, skipped = await self.runner.call("mailbox", functools.partial(
            fetch, email.id, limit))
        self.attachments.copied += len(got)
        self.attachments.skipped += skipped
        return msgspec.structs.replace(record, attachments=got)

    async def _contact(self, address: str, accounts: dict[str, str | None]) -> Contact:
        """A portal contact for an unknown address (under its company's account with
        `createCompany`)."""
        portal = self.runner.connectors["portal"]
        account_id: str | None = None
        if self.options.email.create_company:
            domain = domain_of(address)
            if domain not in accounts:
                accounts[domain] = await self._account(address)
            account_id = accounts[domain]
        contact = new_contact(address, self.options.email, account_id)
        return await self.runner.call("portal", functools.partial(
            portal.create_contact, contact))

    async def _account(self, address: str) -> str | None:
        account = new_account(address)
        if account is None:
            return None
        portal = self.runner.connectors["portal"]
        if supports(portal, Capability.ACCOUNTS_BY_DOMAIN):
            found = await self.runner.call("portal", functools.partial(
                portal.accounts_by_domain, domain_of(address)))
            live = [a for a in found if not a.deleted]
            if live:
                return live[0].id
        made = await self.runner.call("portal", functools.partial(
            portal.create_account, account))
        return made.id

    async def _deals(self, contacts: list[Contact]) -> list[OpportunityRef]:
        portal = self.runner.connectors["portal"]
        if not (contacts and self.options.email.auto_detect_deal
                and supports(portal, Capability.OPPORTUNITIES)):
            return []
        return await self.runner.call("portal", functools.partial(
            portal.opportunities_for_contacts, [c.id for c in contacts]))
