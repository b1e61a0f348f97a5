"""`switchboard reseal`: rewrite every sealed value of the registry under the current key.

Run it after putting a new key first in ``SWITCHBOARD_SECRET_KEYS`` (old keys after it)
and restarting the services: it reads the registry, and every integration holding a value
sealed under an older key, or in the legacy ``sealed:v1:`` form, is written again as its
next version with each value sealed under the first key and bound to its integration and
field. Once it reports nothing left to do, the old keys can be removed. Safe to run again
and while the hub serves (a concurrent update simply wins; run it once more).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from switchboard.kafka import make_producer, run_with_broker_retry
from switchboard.keys import Sealer, UnsealError
from switchboard.sealing import reseal_record
from switchboard.settings import Settings
from switchboard.store import RegistryStore

log = logging.getLogger(__name__)


class ResealReport(msgspec.Struct, frozen=True):
    rewritten: int
    unchanged: int
    # Integrations with a value no configured key opens (or moved from another record).
    unreadable: list[str]
    # Changed meanwhile by someone else: run again.
    conflicts: list[str]


async def reseal(settings: Settings, *, dry_run: bool = False,
                 say: Callable[[str], None] = print) -> ResealReport:
    sealer = Sealer.from_b64(settings.sealing_keys)
    producer = make_producer(settings)
    await run_with_broker_retry("producer", producer.start)
    store = RegistryStore(settings, producer)
    try:
        await store.start()
        view = await store.sync()
        rewritten = unchanged = 0
        unreadable: list[str] = []
        conflicts: list[str] = []
        for rec in sorted(view.integrations.values(), key=lambda r: r.created_at):
            try:
                fresh = reseal_record(sealer, rec)
            except UnsealError as exc:
                unreadable.append(rec.integration_id)
                say(f"integration {rec.integration_id}: cannot open ({exc.description})")
                continue
            if fresh is None:
                unchanged += 1
                continue
            if not dry_run:
                outcome = await store.put(fresh)
                if not outcome.accepted:
                    conflicts.append(rec.integration_id)
                    say(f"integration {rec.integration_id}: {outcome.reason}; run again")
                    continue
            rewritten += 1
        verb = "would rewrite" if dry_run else "rewrote"
        say(f"reseal under key {sealer.key_id}: {verb} {rewritten}, {unchanged} already "
            f"current, {len(unreadable)} unreadable, {len(conflicts)} changed meanwhile")
        return ResealReport(rewritten, unchanged, unreadable, conflicts)
    finally:
        await store.stop()
        await producer.stop()
