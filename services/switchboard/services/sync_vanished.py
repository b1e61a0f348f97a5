"""The I/O of the check of paired ids on a Syncro side (what it decides is pure, in
`switchboard.sync.vanished`): which paired records Syncro deleted for good, as deleted
records to add to that side's changes before planning.

When: on an initial run, and on other runs once the last complete check is
`SWITCHBOARD_SYNC_SYNCRO_CHECK_INTERVAL_S` old (default a day; 0: every run), per
profile and module. The time of the check is kept with the module's watermark, so it
counts only once the run's plan was applied; a check left without a verdict for some id
(Syncro answered 5xx) is not counted and the next run checks again.

Why a sweep of the listing first rather than a GET per paired id: every request takes a
slot of the account's 180 a minute, shared with everything else the hub sends Syncro. A
Syncro side's "mine" is the whole account, so after a first run nearly every record is
paired: a GET each would cost one request per record (10,000 contacts: 56 minutes of
the whole budget), the listing one per page of records (25 on Syncro: 400 requests).
The sweep stops as soon as a GET of each id it has not listed is cheaper
(`vanished.keep_sweeping`), and a GET confirms each id it did not list, so a listing
shifting under a delete never deletes a live record.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from switchboard import clock
from switchboard.services.channels.syncro_connector import SyncroConnector
from switchboard.sync.options import Side
from switchboard.sync.records import Kind, Record
from switchboard.sync.vanished import (
    CHECKED_AT,
    Answer,
    due,
    keep_sweeping,
    paired_ids,
    vanished,
)

if TYPE_CHECKING:
    from switchboard.services.sync_runner import Runner

log = logging.getLogger(__name__)

__all__ = ["check_paired"]

_MODULES: dict[Kind, str] = {"account": "accounts", "contact": "contacts"}


async def check_paired(runner: Runner, kind: Kind, side: Side, conn: object
                       ) -> list[Record]:
    """`side`'s paired records of `kind` Syncro no longer has, deleted (none unless
    `conn` is Syncro's and the check is due); marks the check done in
    `conn.delta_links` when every paired id got a verdict."""
    if not isinstance(conn, SyncroConnector) or kind not in _MODULES:
        return []
    now = clock.now_ms()
    every = runner.store.runtime.settings.sync_syncro_check_interval_s
    if not due(conn.delta_links, now, every, runner.job.initial):
        return []
    pairs = list(runner.index(kind, _MODULES[kind]))
    ids = set(paired_ids(pairs, kind, side))
    listed: set[str] = set()
    answers: dict[str, Answer] = {}
    number: int | None = 1 if ids else None
    sweeps = probes = 0
    while number is not None:
        page = await runner.call(side, functools.partial(conn.id_page, kind, number))
        sweeps += 1
        if page is None:  # Syncro failed to answer: no verdict for anything this run
            log.warning("sync %s: Syncro %s listing failed, paired ids checked next run",
                        runner.profile.profile_id, kind)
            return []
        listed.update(page.ids)
        number = page.next if keep_sweeping(len(ids - listed), page.pages_left) else None
    for record_id in sorted(ids - listed):
        answers[record_id] = await runner.call(
            side, functools.partial(conn.probe, kind, record_id))
        probes += 1
    verdict = vanished(pairs, kind, side, listed, answers)
    if verdict.complete:
        conn.delta_links[CHECKED_AT] = str(now)
    log.info("sync %s: %d paired %s ids checked in Syncro (%d pages, %d GETs): %d deleted"
             "%s", runner.profile.profile_id, len(ids), kind, sweeps, probes,
             len(verdict.deleted), "" if verdict.complete else ", some without an answer")
    return verdict.deleted
