"""E-mail logging, one way, mailbox → portal (pure decisions; the runner does the I/O).

A run reads the mailbox's messages since its watermark and, for each, decides:

- **once**: a message is logged once per profile, keyed by its Message-ID (the mailbox's
  own id when it has none) through the pair index, so a re-run, a replay or a message
  read twice (sent to oneself) logs nothing twice;
- **whose**: its addresses (sender, to, cc) other than the mailbox's own, without the
  profile's `skipDomains` (and their subdomains), are looked up as portal contacts
  (``getContactsByEmail``); an address no contact has becomes a contact only with
  `createContacts` (a plain contact) or `createLeads` (a contact tagged ``lead``: the
  contract has no lead object), filed under an account for its domain with
  `createCompany` (one found by domain, else made; never for public mail domains);
- **whether**: a message that matches no contact, and makes none, is not logged;
- **where**: the logged e-mail names its contacts, the first one's account and, with
  `autoDetectDeal`, the open opportunities of those contacts
  (``getOpportunitiesForContacts``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec
from msgspec import Struct

from switchboard.sync.ops import Create, Plan, Watermark
from switchboard.sync.options import EmailLogOptions
from switchboard.sync.pairs import Pair, PairIndex, PairSide
from switchboard.sync.records import Account, Contact, EmailLog, OpportunityRef, Value

__all__ = [
    "LOGGED_FIELDS",
    "PUBLIC_DOMAINS",
    "Decision",
    "addresses",
    "decide",
    "log_key",
    "log_record",
    "logged_pair",
    "new_account",
    "new_contact",
    "plan_emails",
]

# What a logged e-mail carries from the message (references are added when applied).
LOGGED_FIELDS = ("message_id", "subject", "body", "from_address", "to", "cc", "sent_at",
                 "direction")
# Mail providers' domains: an address there is a person, not a company.
PUBLIC_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.com",
    "gmx.de", "web.de", "proton.me", "protonmail.com", "mail.com", "yandex.com",
    "zoho.com", "fastmail.com",
})


class Decision(Struct, frozen=True, kw_only=True):
    """What to do with one message: `skip` says why not (None: log it), `matched` the
    addresses portal contacts have, `create` the addresses to make contacts for."""

    key: str
    skip: str | None = None
    matched: tuple[str, ...] = ()
    create: tuple[str, ...] = ()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().casefold().rstrip(".")


def _skipped(address: str, skip_domains: Iterable[str]) -> bool:
    domain = domain_of(address)
    for d in skip_domains:
        d = d.strip().casefold().lstrip("@").rstrip(".")
        if d and (domain == d or domain.endswith("." + d)):
            return True
    return False


def log_key(email: EmailLog) -> str:
    """The key a message is logged once under: its Message-ID, else the mailbox's id."""
    mid = (email.message_id or "").strip()
    return mid if mid else f"id:{email.id}"


def addresses(email: EmailLog, me: str, options: EmailLogOptions) -> list[str]:
    """The message's addresses worth matching: casefolded, each once, in order (sender,
    to, cc), without the mailbox's own and the skipped domains."""
    mine = me.strip().casefold()
    out: list[str] = []
    for raw in (email.from_address, *email.to, *email.cc):
        a = (raw or "").strip().casefold()
        if "@" not in a or a == mine or a in out or _skipped(a, options.skip_domains):
            continue
        out.append(a)
    return out


def decide(email: EmailLog, me: str, known: Mapping[str, Contact],
           options: EmailLogOptions, index: PairIndex) -> Decision:
    """Log `email` or not, matched to which contacts (`known`: portal contacts by
    casefolded e-mail), making which (see the module docstring)."""
    key = log_key(email)
    if email.deleted:
        return Decision(key=key, skip="deleted")
    if index.find("email", "mailbox", key) is not None:
        return Decision(key=key, skip="logged")
    found = addresses(email, me, options)
    matched = tuple(a for a in found if a in known)
    create: tuple[str, ...] = ()
    if options.create_contacts or options.create_leads:
        create = tuple(a for a in found if a not in known)
    if not matched and not create:
        return Decision(key=key, skip="no contact")
    return Decision(key=key, matched=matched, create=create)


def new_contact(address: str, options: EmailLogOptions, account_id: str | None = None
                ) -> Contact:
    """The portal contact made for an unknown address (named after its local part)."""
    local = address.partition("@")[0]
    lead = options.create_leads and not options.create_contacts
    return Contact(id="new", modified_at=0, email=address, last_name=local or address,
                   account_id=account_id, tags=["lead"] if lead else [])


def new_account(address: str) -> Account | None:
    """The account made for an unknown address's company: None for a public mail domain."""
    domain = domain_of(address)
    if not domain or domain in PUBLIC_DOMAINS:
        return None
    return Account(id="new", modified_at=0, name=domain, domain=domain)


def _values(email: EmailLog) -> dict[str, Value]:
    return {name: getattr(email, name) for name in LOGGED_FIELDS}


def plan_emails(emails: Sequence[EmailLog], me: str, known: Mapping[str, Contact],
                options: EmailLogOptions, index: PairIndex, watermark: Watermark,
                overlap_ms: int = 0) -> tuple[Plan, list[Decision]]:
    """The e-mail module's plan: one `Create` on the portal per message to log (values:
    the message's `LOGGED_FIELDS`; the runner adds contacts and opportunities when it
    applies it, see `log_record`), and every message's decision."""
    ops: list[Create] = []
    decisions: list[Decision] = []
    seen: set[str] = set()
    newest = watermark.mailbox
    for email in emails:
        when = email.sent_at if email.sent_at is not None else email.modified_at
        newest = max(newest, when - overlap_ms)
        d = decide(email, me, known, options, index)
        if d.skip is None and d.key in seen:
            d = Decision(key=d.key, skip="logged")
        decisions.append(d)
        if d.skip is not None:
            continue
        seen.add(d.key)
        ops.append(Create(kind="email", side="portal", source_id=d.key, values=_values(email),
                          source=PairSide(id=d.key, seen_at=email.modified_at), fields={}))
    plan = Plan(kind="email", ops=list(ops), pairs=[], unpaired=[], matched=[], conflicts=[],
                watermark=Watermark(portal=watermark.portal, mailbox=newest))
    return plan, decisions


def log_record(values: Mapping[str, Value], contacts: Sequence[Contact],
               opportunities: Sequence[OpportunityRef], options: EmailLogOptions
               ) -> EmailLog:
    """The e-mail to create on the portal: the message's values, its contacts, the first
    contact's account and (with `autoDetectDeal`) those contacts' open opportunities."""
    ids = list(dict.fromkeys(c.id for c in contacts))
    account = next((c.account_id for c in contacts if c.account_id), None)
    deals: list[str] = []
    if options.auto_detect_deal:
        mine = set(ids)
        deals = list(dict.fromkeys(o.id for o in opportunities
                                   if not o.closed and not o.deleted
                                   and mine & set(o.contact_ids)))
    base = EmailLog(id="new", modified_at=0, contact_ids=ids, account_id=account,
                    opportunity_ids=deals)
    return msgspec.structs.replace(base, **{k: v for k, v in values.items()
                                            if k in LOGGED_FIELDS})


def logged_pair(op: Create, portal_id: str, modified_at: int = 0) -> Pair:
    """The pair that says `op`'s message is logged as the portal's e-mail `portal_id`."""
    return Pair(kind="email", portal=PairSide(id=portal_id, seen_at=modified_at),
                mailbox=op.source)
