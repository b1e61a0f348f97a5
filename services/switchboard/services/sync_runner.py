"""One run of a sync profile: read both sides' changes since the watermarks (and what
`matching.lookups` asks for), plan every enabled module, then apply the plans through
the connectors in the order `switchboard.sync.ops` prescribes, writing each created
pair, then the plan's pairs, then the watermark, to `sync.pairs` as it goes.

Modules run in `references.MODULE_ORDER` (accounts, contacts, tasks, calendar, e-mail):
references between records are translated through the pairs (`switchboard.sync.
references`), so a module is planned again, from the same reads, just before it is
applied when an earlier module of the run wrote pairs it may refer to. The fields a
module syncs, unless its options name them, are its defaults and its references that
both sides store (a connector's `stored_fields`). A side's change cursors (Graph's delta
links) are kept with the watermark. E-mail logging is `sync_email_run`; what portal
writes carry beyond the synced fields (a contact's company account, an event's files) is
`sync_writes`.

Why a run killed anywhere resumes without duplicates: a create's pair is durable before
the op counts as done, and the watermark moves only after the whole plan; the job stays
uncommitted on `sync.jobs`, so the next worker re-reads the same changes and the planner
recognises what was already done (see `switchboard.sync.ops`). Creates run up to
`SWITCHBOARD_SYNC_CREATE_CONCURRENCY` at once when each carries a match key only it has
(`ops.alongside`): what a crash leaves created without its pair, the next run matches;
any other op waits for them and runs alone. A module still
in review only plans: its report is the run's result and nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from switchboard.clock import now_ms
from switchboard.errors import SwitchboardError
from switchboard.kafka import SYNC_PAIRS
from switchboard.services.sync_email_run import EmailRun
from switchboard.services.sync_store import SyncStore
from switchboard.services.sync_vanished import check_paired
from switchboard.services.sync_window import Window
from switchboard.services.sync_writes import WriteHooks
from switchboard.sync.connector import Capability, Connector, all_records, supports
from switchboard.sync.errors import ConnectorError, RateLimited, RecordNotFound
from switchboard.sync.filters import filter_changes
from switchboard.sync.matching import Lookup, lookups
from switchboard.sync.merge import after_create
from switchboard.sync.ops import Create, Plan, Update, Watermark, alongside
from switchboard.sync.options import (
    SIDES,
    FieldMap,
    ModuleOptions,
    Side,
    other,
)
from switchboard.sync.pairs import Pair, PairIndex
from switchboard.sync.plan import Changes, plan
from switchboard.sync.profiles import (
    MODULE_KINDS,
    Module,
    ModuleCounts,
    ModuleSpec,
    ProfileRecord,
    RunJob,
)
from switchboard.sync.records import KINDS, Kind, Record
from switchboard.sync.references import (
    MODULE_ORDER,
    REFERENCES,
    reference_maps,
    to_portal_space,
    to_side,
    unsynced,
)
from switchboard.sync.review import Report, review
from switchboard.sync.run_module import (
    MODULE_OF,
    effective_options,
    module_counts,
    stored_fields,
)
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
# What a kind needs of both sides beyond the required methods (e-mail logging's needs
# are `sync_email_run`'s).
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
    """One module of a run: what was read, its plan, and where it started."""

    def __init__(self, module: Module, options: ModuleOptions, changes: Changes,
                 plan: Plan, old: Watermark, start: Watermark,
                 links: dict[Side, dict[str, str]]) -> None:
        self.module = module
        self.options = options
        self.changes = changes  # as read: references in each side's own ids
        self.plan = plan
        self.old = old
        self.start = start
        self.links = links


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
        # Each kind's pair index as this run leaves it (references are translated
        # through the pairs of the modules applied before).
        self.indexes: dict[Kind, PairIndex] = {}

    async def call(self, side: Side, call: Callable[[], Awaitable[T]]) -> T:
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

    def index(self, kind: Kind, module: str) -> PairIndex:
        if kind not in self.indexes:
            self.indexes[kind] = self.store.pairs.index(self.profile.profile_id, module)
        return self.indexes[kind]

    async def tick(self) -> None:
        self.done += 1
        await self.progress(self.done, self.total)

    def _modules(self) -> list[tuple[Module, ModuleSpec]]:
        enabled = [(m, s) for m, s in self.profile.modules.items() if s.enabled]
        return sorted(enabled, key=lambda ms: MODULE_ORDER.index(MODULE_KINDS[ms[0]]))

    async def _prepare(self, module: Module, spec: ModuleSpec) -> Planned | EmailRun | None:
        """Read and plan one module; None if the sides cannot sync it."""
        kind = MODULE_KINDS[module]
        start, old = self._start(module)
        if kind == "email":
            email = EmailRun(self, module, spec.options, old, start)
            return email if await email.prepare() else None
        need = _NEEDS[kind]
        if need is not None and not all(supports(c, need) for c in self.connectors.values()):
            return None  # tasks and events need both sides to declare them
        options = effective_options(kind, spec.options, [
            stored_fields(c, kind) for c in self.connectors.values()])
        changes, links = await self._read(kind, start)
        result = await self._plan(kind, module, options, changes, start)
        return Planned(module, options, changes, result, old, start, links)

    async def run(self) -> None:
        planned: list[Planned | EmailRun] = []
        for module, spec in self._modules():
            p = await self._prepare(module, spec)
            if p is None:
                self.counts[module] = ModuleCounts(skipped="unsupported")
                continue
            if spec.need_review:
                self.reports[module] = review(p.plan)
                self.counts[module] = module_counts(p.plan, reviewed=True)
                continue
            self.counts[module] = module_counts(p.plan)
            planned.append(p)
        self.total = sum(len(p.plan.ops) for p in planned)
        await self.progress(self.done, self.total)
        written: set[Kind] = set()
        for p in planned:
            kind = p.plan.kind
            if isinstance(p, Planned) and written & set(REFERENCES.get(kind, {}).values()):
                # Pairs the references may name were written in this run: plan again.
                again = await self._plan(kind, p.module, p.options, p.changes, p.start)
                self.total += len(again.ops) - len(p.plan.ops)
                p.plan = again
                self.counts[p.module] = module_counts(again)
            elif isinstance(p, EmailRun) and written:
                # Contacts written in this run are the e-mails' contacts too.
                before = len(p.plan.ops)
                await p.refresh()
                self.total += len(p.plan.ops) - before
                self.counts[p.module] = module_counts(p.plan)
            if isinstance(p, Planned):
                await self._apply(p)
            else:
                await p.apply()
            if p.plan.ops or p.plan.pairs:
                written.add(kind)

    def _start(self, module: Module) -> tuple[Watermark, Watermark]:
        """Where the module's reads start (the watermark, or what the job asks), and the
        stored watermark."""
        old = self.store.pairs.watermark(self.profile.profile_id, module)
        start = old
        if self.job.since is not None:
            start = Watermark(portal=self.job.since, mailbox=self.job.since,
                              portal_links=old.portal_links, mailbox_links=old.mailbox_links)
        elif self.job.initial:
            start = Watermark()
        return start, old

    async def _plan(self, kind: Kind, module: str, options: ModuleOptions, changes: Changes,
                    start: Watermark) -> Plan:
        """Lookups for the unpaired, references into portal space, and the plan."""
        changes = filter_changes(changes, options, now_ms())  # the module's tag/calendar filters
        index = self.index(kind, module)
        maps = options.field_maps(kind)
        known: dict[Side, list[Record]] = {"portal": [], "mailbox": []}
        for side in SIDES:
            got = changes.portal if side == "portal" else changes.mailbox
            unpaired = [r for r in got if index.find(kind, side, r.id) is None]
            for q in lookups(kind, side, unpaired):
                known[q.side] += await self._lookup(q)
        if reference_maps(kind, maps):
            def space(records: list[Record]) -> list[Record]:
                return to_portal_space(kind, records, maps, self.indexes)
            for ref in REFERENCES[kind].values():
                self.index(ref, MODULE_OF[ref])
            changes = Changes(portal=changes.portal, mailbox=space(changes.mailbox),
                              portal_known=known["portal"],
                              mailbox_known=space(known["mailbox"]))
        else:
            changes = Changes(portal=changes.portal, mailbox=changes.mailbox,
                              portal_known=known["portal"], mailbox_known=known["mailbox"])
        return plan(kind, changes, index, options, start)

    async def _read(self, kind: Kind, start: Watermark
                    ) -> tuple[Changes, dict[Side, dict[str, str]]]:
        listing = _METHODS[kind][0]
        got: dict[Side, list[Record]] = {}
        links: dict[Side, dict[str, str]] = {}
        for side in SIDES:
            conn = self.connectors[side]
            since = start.portal if side == "portal" else start.mailbox
            cursors = getattr(conn, "delta_links", None)
            if isinstance(cursors, dict):
                cursors.clear()
                cursors.update(start.portal_links if side == "portal"
                               else start.mailbox_links)
            method = getattr(conn, listing)

            async def page(cursor: str | None, side: Side = side, method: Any = method,
                           since: int = since) -> Any:
                return await self.call(side, lambda: method(since or None, cursor))

            got[side] = [r async for r in all_records(page)]
            # Syncro keeps no tombstone: its paired records deleted for good, found by a
            # check of their ids (before the links are kept: they hold the check's time).
            got[side] += await check_paired(self, kind, side, conn)
            links[side] = dict(cursors) if isinstance(cursors, dict) else {}
        return Changes(portal=got["portal"], mailbox=got["mailbox"]), links

    async def _lookup(self, q: Lookup) -> list[Record]:
        conn = self.connectors[q.side]
        out: list[Record] = []
        if q.by == "email":
            out += await self.call(q.side, lambda: conn.contacts_by_email(list(q.values)))
        elif q.by == "domain" and supports(conn, Capability.ACCOUNTS_BY_DOMAIN):
            for v in q.values:
                out += await self.call(q.side, functools.partial(conn.accounts_by_domain, v))
        elif q.by == "name":
            for v in q.values:
                out += await self.call(q.side, functools.partial(conn.accounts_by_name, v))
        return out

    async def write_pair(self, module: str, pair: Pair, drop: bool = False) -> None:
        """One pair durable on `sync.pairs` (`drop`: forgotten), and in this run's
        index."""
        index = self.index(pair.kind, module)
        await self.store.write(SYNC_PAIRS, pair_key(self.profile.profile_id, module, pair),
                               None if drop else _pair_enc.encode(pair), applied=False)
        # In place: this run's own index (a copy per pair made an initial sync quadratic).
        if drop:
            index.remove(pair)
        else:
            index.add(pair)

    async def write_watermark(self, module: str, old: Watermark, new: Watermark,
                              links: dict[Side, dict[str, str]] | None = None) -> None:
        # Never backwards (a run from an earlier dtStartUTC reads more, it does not
        # forget what later runs already took in).
        links = links or {}
        wm = Watermark(portal=max(old.portal, new.portal),
                       mailbox=max(old.mailbox, new.mailbox),
                       portal_links=links.get("portal", old.portal_links),
                       mailbox_links=links.get("mailbox", old.mailbox_links))
        await self.store.write(SYNC_PAIRS, watermark_key(self.profile.profile_id, module),
                               _pair_enc.encode(wm))

    async def _create(self, p: Planned, op: Create, maps: Sequence[FieldMap],
                      hooks: WriteHooks) -> None:
        kind = p.plan.kind
        _, create, update, _ = _METHODS[kind]
        write = getattr(self.connectors[op.side], create)
        values, missing = to_side(kind, op.side, op.values, maps, self.indexes)
        fields: dict[str, Any] = values
        rec = await hooks.create(op, KINDS[kind](id="new", modified_at=0, **fields))
        made = await self.call(op.side, functools.partial(write, rec))
        if op.side == "mailbox":
            made = to_portal_space(kind, [made], maps, self.indexes)[0]
        back, pair = after_create(op, made, maps)
        # Durable before the op counts as done: a crash after it never creates this twice.
        await self.write_pair(p.module, unsynced(pair, missing, maps))
        if back:
            # What the side assigned itself (an event's UID) goes back at once.
            source = other(op.side)
            values, _ = to_side(kind, source, back, maps, self.indexes)
            update_source = getattr(self.connectors[source], update)
            with contextlib.suppress(RecordNotFound):
                await self.call(source, functools.partial(update_source, op.source_id, values))
        await self.tick()

    async def _apply(self, p: Planned) -> None:
        kind = p.plan.kind
        maps = p.options.field_maps(kind)
        _, _, update, delete = _METHODS[kind]
        window = Window(self.store.runtime.settings.sync_create_concurrency)
        hooks = WriteHooks(self, p)  # what portal writes carry beyond the fields
        together = alongside(p.plan.ops, maps)
        # Pairs whose references could not be written (no partner yet): unsynced.
        left: dict[tuple[Side, str], list[str]] = {}
        try:
            for i, op in enumerate(p.plan.ops):
                if isinstance(op, Create) and i in together:
                    await window.start(functools.partial(self._create, p, op, maps, hooks))
                    continue
                await window.drain()
                if isinstance(op, Create):
                    await self._create(p, op, maps, hooks)
                    continue
                write = getattr(self.connectors[op.side],
                                update if isinstance(op, Update) else delete)
                if isinstance(op, Update):
                    values, missing = to_side(kind, op.side, op.values, maps, self.indexes)
                    if missing:
                        left[(op.side, op.id)] = missing
                    values = await hooks.update(op, values)
                    if values:
                        # Deleted meanwhile: the next run reads the delete.
                        with contextlib.suppress(RecordNotFound):
                            await self.call(op.side, functools.partial(write, op.id, values))
                else:
                    # Already gone: what the op wanted.
                    with contextlib.suppress(RecordNotFound):
                        await self.call(op.side, functools.partial(write, op.id))
                await self.tick()
            await window.drain()
        finally:
            await window.cancel()
        for pair in p.plan.pairs:
            await self.write_pair(p.module, unsynced(
                pair, left.get(("mailbox", pair.mailbox.id), []), maps))
        for pair in p.plan.unpaired:
            await self.write_pair(p.module, pair, drop=True)
        await self.write_watermark(p.module, p.old, p.plan.watermark, p.links)
        hooks.finish()
