"""Contacts filed under their company's account (pure; the I/O is
`switchboard.services.sync_writes`).

With the contacts module's ``createCompany`` (seed 000's ``contCreateCompany``), a
contact written to the portal (created, or updated with a new company name) whose
``company_name`` names a company is filed under that company's portal account: the
account the profile already made or found for that name (kept in the record-pair index
of `COMPANIES`, so a re-run neither looks up nor makes it again), else a live portal
account of that name (``getAccountsByName``), else one at the domain of the contact's
e-mail (``getAccountsByDomain``; never a public mail domain), else a new account named
after the company (with that domain). Only writes toward the portal are filed (the
module's direction decides which exist), and only where the write does not already set
the contact's account (both sides syncing ``account_id`` through the accounts module).
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec import Struct

from switchboard.sync.email_log import PUBLIC_DOMAINS, domain_of
from switchboard.sync.matching import match_key
from switchboard.sync.ops import Create, Op, Update
from switchboard.sync.options import ModuleOptions, flows
from switchboard.sync.pairs import Pair, PairIndex, PairSide
from switchboard.sync.records import Account, Value

__all__ = ["COMPANIES", "CompanyCounts", "Filing", "company_key", "company_pair", "filings",
           "known", "new_account", "pick"]

class CompanyCounts(Struct, kw_only=True, rename="camel"):
    """The accounts a run filed contacts under that the profile did not keep yet (in the
    contacts module's counts): found on the portal by name or domain, or made there."""

    found: int = 0
    created: int = 0


# The pair-index module under which a profile's companies are kept: kind "account",
# the portal's account paired with the key "company:<name folded>".
COMPANIES = "contacts-companies"


class Filing:
    """One contact write to file: the op's position, its company key and name, and the
    domain of the contact's e-mail (None for none or a public mail domain)."""

    __slots__ = ("domain", "index", "key", "name")

    def __init__(self, index: int, key: str, name: str, domain: str | None) -> None:
        self.index, self.key, self.name, self.domain = index, key, name, domain

    def __repr__(self) -> str:
        return f"Filing({self.index}, {self.key!r}, {self.name!r}, {self.domain!r})"


def company_key(name: Value) -> str | None:
    """The key a company is known by: its name, spaces collapsed and case folded."""
    if not isinstance(name, str):
        return None
    folded = match_key(Account(id="-", modified_at=0, name=name), {}, "name")
    return f"company:{folded}" if folded else None


def _domain(email: Value) -> str | None:
    if not isinstance(email, str) or "@" not in email:
        return None
    domain = domain_of(email)
    return domain if domain and "." in domain and domain not in PUBLIC_DOMAINS else None


def filings(ops: Sequence[Op], options: ModuleOptions,
            emails: dict[str, str | None] | None = None) -> list[Filing]:
    """The contact writes of a plan to file under a company: creates and updates on the
    portal that carry a company name and no account (`emails`: the contact's e-mail by
    portal id, for an update that does not change it)."""
    if not options.create_company or not flows(options.direction, "mailbox"):
        return []
    out: list[Filing] = []
    for i, op in enumerate(ops):
        if not isinstance(op, Create | Update) or op.kind != "contact" \
                or op.side != "portal" or "company_name" not in op.values \
                or op.values.get("account_id"):
            continue
        key = company_key(op.values["company_name"])
        if key is None:
            continue
        email = op.values.get("email") if isinstance(op, Create) or "email" in op.values \
            else (emails or {}).get(op.id)
        name = str(op.values["company_name"]).strip()
        out.append(Filing(i, key, name, _domain(email)))
    return out


def known(index: PairIndex, key: str) -> str | None:
    """The portal account already kept for company `key`, if any."""
    pair = index.find("account", "mailbox", key)
    return None if pair is None or pair.portal.deleted else pair.portal.id


def pick(filing: Filing, by_name: Sequence[Account], by_domain: Sequence[Account]
         ) -> Account | None:
    """The existing account the company is: a live one of its name (in id order), else
    a live one at its domain."""
    named = sorted((a for a in by_name if not a.deleted
                    and company_key(a.name) == filing.key), key=lambda a: a.id)
    if named:
        return named[0]
    at = sorted((a for a in by_domain if not a.deleted), key=lambda a: a.id)
    return at[0] if at else None


def new_account(filing: Filing) -> Account:
    """The account made for a company no portal account is."""
    return Account(id="new", modified_at=0, name=filing.name, domain=filing.domain)


def company_pair(filing: Filing, account: Account) -> Pair:
    """The pair that keeps `account` as the company's account for the next runs."""
    return Pair(kind="account", portal=PairSide(id=account.id, seen_at=account.modified_at),
                mailbox=PairSide(id=filing.key))
