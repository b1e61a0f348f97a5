"""A run's progress as the status shows it: operations done of the total, the rate so
far and the time left at that rate (pure: the API computes it on every read)."""

from __future__ import annotations

from msgspec import Struct

__all__ = ["Progress", "progress"]


class Progress(Struct, frozen=True, kw_only=True, rename="camel"):
    done: int
    total: int
    # Operations per second since the run started; None before any is done.
    records_per_second: float | None = None
    # Milliseconds left at that rate; 0 when finished, None while unknown (nothing done
    # yet, or no run executing).
    eta_ms: int | None = None


def progress(done: int, total: int, started_at: int | None, now: int,
             executing: bool) -> Progress:
    """`done` of `total` operations of a run started at `started_at` (ms), seen at `now`:
    the rate is done / elapsed, the ETA the rest at that rate."""
    if total > 0 and done >= total:
        return Progress(done=done, total=total, eta_ms=0,
                        records_per_second=_rate(done, started_at, now))
    rate = _rate(done, started_at, now) if executing else None
    if rate is None or rate <= 0:
        return Progress(done=done, total=total, records_per_second=rate)
    eta = round((total - done) / rate * 1000)
    return Progress(done=done, total=total, records_per_second=rate, eta_ms=max(0, eta))


def _rate(done: int, started_at: int | None, now: int) -> float | None:
    if started_at is None or done <= 0:
        return None
    elapsed = max(now - started_at, 1)
    return round(done / (elapsed / 1000), 3)
