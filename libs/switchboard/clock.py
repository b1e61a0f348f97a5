"""The wall clock as the services read it: epoch milliseconds, the unit of every timestamp
in our records. Pure functions take ``now_ms`` as an argument; only the I/O shell calls
this, so tests of the core never depend on the time of day."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch (UTC), as ``time.time()`` says."""
    return int(time.time() * 1000)
