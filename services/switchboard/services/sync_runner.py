"""One run of a sync profile: read both sides' changes since the watermarks (and what
`matching.lookups` asks for), plan every enabled module, then apply the plans through
the connectors in the order `switchboard.sync.ops` prescribes, writing each created
pair, then the plan's pairs, then the watermark, to `sync.pairs` as it goes.

Why a run killed anywhere resumes without duplicates: every create's pair is durable
before the next op starts, and the watermark moves only after the whole plan; the job
stays uncommitted on `sync.jobs`, so the next worker re-reads the same changes and the
planner recognises what was already done (see `switchboard.sync.ops`). A module still
in review only plans: its report is the run's result and nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from switchboard.errors import SwitchboardError
from switchboard.kafka import SYNC_PAIRS
from switchboard.services.sync_store import SyncStore
from switchboard.sync.connector import Capability, Connector, all_records, supports
from switchboard.sync.errors import ConnectorError, RateLimited, RecordNotFound
from switchboard.sync.matching import Lookup, lookups
from switchboard.sync.ops import Create, Plan, Update, Watermark, created_pair
from switchboard.sync.options import SIDES, Side
from switchboard.sync.pairs import PairIndex
from switchboard.sync.plan import Changes, plan
from switchboard.sync.profiles import MODULE_KINDS, Module, ModuleCounts, ProfileRecord, RunJob
from switchboard.sync.records import KINDS, Kind, Record
from switchboard.sync.review import Report, review
from switchboard.sync.tables import pair_key, watermark_key

log = logging.getLogger(__name__)
T = TypeVar("T")
_pair_enc = msgspec.json.Encoder()

# The Protocol's methods per kind: listing, create, update, delete.
_METHODS: dict[Kind, tuple[str, str, str, str]] = {
    "contact": ("my_contacts", "create_contact", "update_contact", "delete_contact"),
    "account": ("my_accounts", "create_account", "update_account", "delete_account"),
    "task": ("my_tasks", "create_task", "update_task", "delete_task"),
    "event": ("my_events", "create_event", "update_event", "delete_event"),
}
# What a kind needs of both sides beyond the required methods.
_NEEDS: dict[Kind, Capability | None] = {
    "contact": None, "account": None, "task": Capability.TASKS, "event": Capability.EVENTS,
}


class RunFailed(SwitchboardError):
    """A side failed the run for good (refused credentials, a wait beyond the limit, an
    error no retry fixes): the profile's `errMessage` and `errSvcId`."""

    def __init__(self, side: Side | None, description: str) -> None:
        super().__init__("sync_run_failed", description)
        self.side = side


class Planned:
    def __init__(self, module: Module, plan: Plan, old: Watermark) -> None:
        self.module = module
        self.plan = plan
        self.old = old


class Runner:
    """Runs one job of one profile with one connector per side."""

    def __init__(self, store: SyncStore, profile: ProfileRecord, job: RunJob,
                 connectors: dict[Side, Connector],
                 progress: Callable[[int, int], Awaitable[None]]) -> None:
        self.store = store
        self.profile = profile
        self.job = job
        self.connectors = connectors
        self.progress = progress
        self.max_wait_s = store.runtime.settings.sync_max_retry_after_s
        self.counts: dict[str, ModuleCounts] = {}
        self.reports: dict[str, Report] = {}
        self.done = 0
        self.total = 0

    async def _call(self, side: Side, call: Callable[[], Awaitable[T]]) -> T:
        """A connector call, waiting out its side's Retry-After as often as asked."""
        while True:
            try:
                return await call()
            except RateLimited as exc:
                if exc.retry_after > self.max_wait_s:
                    raise RunFailed(side, f"the {side} asked to wait {exc.retry_after} s, "
                                          "beyond SWITCHBOARD_SYNC_MAX_RETRY_AFTER_S") from exc
                log.info("sync %s: %s rate limited, waiting %d s", self.profile.profile_id,
                         side, exc.retry_after)
                await asyncio.sleep(exc.retry_after)
            except RecordNotFound:
                raise
            except ConnectorError as exc:
                raise RunFailed(side, f"{side}: {exc.description}") from exc

    async def run(self) -> None:
        planned: list[Planned] = []
        for module, spec in self.profile.modules.items():
            if not spec.enabled:
                continue
            kind = MODULE_KINDS[module]
            need = _NEEDS.get(kind, Capability.EMAIL)
            if kind not in _METHODS or (need is not None and not all(
                    supports(c, need) for c in self.connectors.values())):
                # E-mail logging has no listing in the contract yet; tasks and events
                # need both sides to declare them.
                self.counts[module] = ModuleCounts(skipped="unsupported")
                continue
            index = self.store.pairs.index(self.profile.profile_id, module)
            old = self.store.pairs.watermark(self.profile.profile_id, module)
            start = old
            if self.job.since is not None:
                start = Watermark(portal=self.job.since, mailbox=self.job.since)
            elif self.job.initial:
                start = Watermark()
            changes = await self._read(kind, index, start)
            result = plan(kind, changes, index, spec.options, start)
            if spec.need_review:
                self.reports[module] = review(result)
                self.counts[module] = _counts(result, reviewed=True)
                continue
            planned.append(Planned(module, result, old))
            self.counts[module] = _counts(result)
        self.total = sum(len(p.plan.ops) for p in planned)
        await self.progress(self.done, self.total)
        for p in planned:
            await self._apply(p)

    async def _read(self, kind: Kind, index: PairIndex, start: Watermark) -> Changes:
        listing = _METHODS[kind][0]
        got: dict[Side, list[Record]] = {}
        for side in SIDES:
            conn = self.connectors[side]
            since = start.portal if side == "portal" else start.mailbox
            method = getattr(conn, listing)

            async def page(cursor: str | None, side: Side = side, method: Any = method,
                           since: int = since) -> Any:
                return await self._call(side, lambda: method(since or None, cursor))

            got[side] = [r async for r in all_records(page)]
        known: dict[Side, list[Record]] = {"portal": [], "mailbox": []}
        for side in SIDES:
            unpaired = [r for r in got[side] if index.find(kind, side, r.id) is None]
            for q in lookups(kind, side, unpaired):
                known[q.side] += await self._lookup(q)
        return Changes(portal=got["portal"], mailbox=got["mailbox"],
                       portal_known=known["portal"], mailbox_known=known["mailbox"])

    async def _lookup(self, q: Lookup) -> list[Record]:
        conn = self.connectors[q.side]
        out: list[Record] = []
        if q.by == "email":
            out += await self._call(q.side, lambda: conn.contacts_by_email(list(q.values)))
        elif q.by == "domain" and supports(conn, Capability.ACCOUNTS_BY_DOMAIN):
            for v in q.values:
                out += await self._call(q.side, functools.partial(conn.accounts_by_domain, v))
        elif q.by == "name":
            for v in q.values:
                out += await self._call(q.side, functools.partial(conn.accounts_by_name, v))
        return out

    async def _apply(self, p: Planned) -> None:
        pid = self.profile.profile_id
        kind = p.plan.kind
        _, create, update, delete = _METHODS[kind]
        for op in p.plan.ops:
            write = getattr(self.connectors[op.side], create if isinstance(op, Create)
                            else update if isinstance(op, Update) else delete)
            if isinstance(op, Create):
                values: dict[str, Any] = dict(op.values)
                rec = KINDS[kind](id="new", modified_at=0, **values)
                made = await self._call(op.side, functools.partial(write, rec))
                pair = created_pair(op, made.id, made.modified_at)
                # Durable before the next op: a crash after it never creates this twice.
                await self.store.write(SYNC_PAIRS, pair_key(pid, p.module, pair),
                                       _pair_enc.encode(pair))
            elif isinstance(op, Update):
                # Deleted meanwhile: the next run reads the delete.
                with contextlib.suppress(RecordNotFound):
                    await self._call(op.side, functools.partial(write, op.id, op.values))
            else:
                # Already gone: what the op wanted.
                with contextlib.suppress(RecordNotFound):
                    await self._call(op.side, functools.partial(write, op.id))
            self.done += 1
            await self.progress(self.done, self.total)
        for pair in p.plan.pairs:
            await self.store.write(SYNC_PAIRS, pair_key(pid, p.module, pair),
                                   _pair_enc.encode(pair))
        for pair in p.plan.unpaired:
            await self.store.write(SYNC_PAIRS, pair_key(pid, p.module, pair), None)
        # Never backwards (a run from an earlier dtStartUTC reads more, it does not
        # forget what later runs already took in).
        wm = Watermark(portal=max(p.old.portal, p.plan.watermark.portal),
                       mailbox=max(p.old.mailbox, p.plan.watermark.mailbox))
        await self.store.write(SYNC_PAIRS, watermark_key(pid, p.module), _pair_enc.encode(wm))


def _counts(result: Plan, reviewed: bool = False) -> ModuleCounts:
    c = ModuleCounts(matched=len(result.matched), conflicts=len(result.conflicts),
                     reviewed=reviewed)
    for op in result.ops:
        if isinstance(op, Create):
            c.created += 1
        elif isinstance(op, Update):
            c.updated += 1
        else:
            c.deleted += 1
    return c


def now_ms() -> int:
    return int(time.time() * 1000)
