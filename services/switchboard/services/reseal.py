"""`switchboard reseal`: rewrite every sealed value of the registry under the current key.

Run it after putting a new key first in ``SWITCHBOARD_SECRET_KEYS`` (old keys after it)
and restarting the services: it reads the registry and writes every hub and integration
again as its next version, each sealed value under the first key and bound to its
integration and field (values sealed under an older key, or in the legacy ``sealed:v1:``
form, are resealed), the record itself signed under the first key. Once it reports
nothing unreadable and nothing changed meanwhile, the old keys can be removed from the
registry's point of view. Safe to run again and while the hub serves (a concurrent
update simply wins; run it once more).

Sync profiles (`sync.profiles`) are resealed the same way: every credential opened and
sealed under the first key, bound to its profile, side and name, the record written
again (a profile updated meanwhile is written once more after our copy and reported).
Progress goes to stderr (`switchboard.progress`): in place on a terminal, a line per
step and every few seconds otherwise.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

import msgspec

from switchboard.kafka import SYNC_PROFILES, make_producer, run_with_broker_retry
from switchboard.progress import Progress
from switchboard.record_mac import guard_for
from switchboard.sealer import Sealer, UnsealError
from switchboard.sealing import reseal_record
from switchboard.services.table_resign import TableReport, resign_table, resign_tables
from switchboard.settings import Settings
from switchboard.store import RegistryStore
from switchboard.sync.sealed import reseal_profile_value

log = logging.getLogger(__name__)


class ResealReport(msgspec.Struct, frozen=True):
    # Integrations with a value that was not yet sealed under the current key, bound.
    rewritten: int
    # Integrations already current (written again all the same, for the record MAC).
    unchanged: int
    # Integrations with a value no configured key opens (or moved from another record).
    unreadable: list[str]
    # Changed meanwhile by someone else: run again.
    conflicts: list[str]
    # The last-write-wins tables (conversations, jobs, stream-cursors, sync status and
    # pairs) signed again.
    tables: list[TableReport] = msgspec.field(default_factory=list)
    # Sync profiles: resealed (or that would be), and those with a credential no
    # configured key opens (their ids; left as they are).
    profiles: TableReport | None = None


def stderr_progress() -> Progress:
    """The progress line of the command line: stderr, in place on a terminal."""
    return Progress("reseal", sys.stderr.write, tty=sys.stderr.isatty())


async def reseal(settings: Settings, *, dry_run: bool = False,
                 say: Callable[[str], None] = print,
                 progress: Progress | None = None) -> ResealReport:
    """Reseal the registry and the sync profiles, sign the tables again (the module)."""
    sealer = Sealer.from_b64(settings.sealing_keys)
    bar = progress if progress is not None else stderr_progress()

    def tell(line: str) -> None:
        bar.clear()
        say(line)

    reported = await _reseal(settings, sealer, dry_run, tell, bar)
    bar.finish()
    bar.clear()
    return reported


async def _reseal(settings: Settings, sealer: Sealer, dry_run: bool,
                  say: Callable[[str], None], bar: Progress) -> ResealReport:
    producer = make_producer(settings)
    await run_with_broker_retry("producer", producer.start)
    store = RegistryStore(settings, producer)
    try:
        await store.start()
        view = await store.sync()
        rewritten = unchanged = 0
        unreadable: list[str] = []
        conflicts: list[str] = []
        # Hubs hold no sealed value, but every record is written again: a record carries
        # a MAC under the key that was first when it was written (switchboard.record_mac),
        # and once the old key is gone only what the current key signed is read.
        bar.step("registry", len(view.hubs) + len(view.integrations))
        for hub in sorted(view.hubs.values(), key=lambda r: r.created_at):
            bar.advance()
            if not dry_run:
                outcome = await store.put(msgspec.structs.replace(hub, version=hub.version + 1))
                if not outcome.accepted:
                    conflicts.append(hub.hub_id)
                    say(f"hub {hub.hub_id}: {outcome.reason}; run again")
        for rec in sorted(view.integrations.values(), key=lambda r: r.created_at):
            bar.advance()
            try:
                fresh = reseal_record(sealer, rec)
            except UnsealError as exc:
                unreadable.append(rec.integration_id)
                say(f"integration {rec.integration_id}: cannot open ({exc.description})")
                continue
            if fresh is None:
                unchanged += 1
                fresh = msgspec.structs.replace(rec, version=rec.version + 1)
            else:
                rewritten += 1
            if not dry_run:
                outcome = await store.put(fresh)
                if not outcome.accepted:
                    conflicts.append(rec.integration_id)
                    say(f"integration {rec.integration_id}: {outcome.reason}; run again")
        verb = "would reseal" if dry_run else "resealed"
        say(f"reseal under key {sealer.key_id}: {verb} {rewritten} integration(s), "
            f"{unchanged} already current, {len(unreadable)} unreadable, {len(conflicts)} "
            f"changed meanwhile; {len(view.hubs)} hub(s) and "
            f"{len(view.integrations) - len(unreadable)} integration(s) "
            f"{'would be ' if dry_run else ''}written again")
        bar.finish()
        profiles = await resign_table(settings, producer, guard_for(settings), SYNC_PROFILES,
                                      dry_run, functools.partial(reseal_profile_value, sealer),
                                      progress=bar)
        bar.finish()
        for key in profiles.unreadable:
            say(f"sync profile {key}: cannot open its credentials; update them (or delete "
                "the profile)")
        say(f"sync profiles: {'would reseal' if dry_run else 'resealed'} "
            f"{profiles.rewritten} profile(s), "
            f"{profiles.current + profiles.resigned - profiles.rewritten} already current, "
            f"{len(profiles.unreadable)} unreadable, {profiles.conflicts} changed meanwhile")
        unreadable += [f"sync profile {key}" for key in profiles.unreadable]
        if profiles.conflicts:
            conflicts.append(SYNC_PROFILES)
        tables = await resign_tables(settings, producer, dry_run=dry_run, say=say,
                                     progress=bar)
        conflicts += [t.table for t in tables if t.conflicts]
        return ResealReport(rewritten, unchanged, unreadable, conflicts, tables, profiles)
    finally:
        await store.stop()
        await producer.stop()
