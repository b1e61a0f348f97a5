"""Syncro's request budget: at most 180 requests in any 60-second window per account.

A sliding window over the times requests were (or will be) sent, not a token bucket: a
bucket of 180 refilling at 3/s lets 180 go at once and 180 more over the next minute,
360 within 60 seconds. Pure: the clock is passed in.

`SlidingWindow.reserve` hands out send times. Each is the earliest moment at which the
window ending there holds fewer than `limit` earlier sends: the request `limit` places
back plus `window` seconds, or later after a 429's ``Retry-After``. Reserved times never
decrease, so any `limit` + 1 consecutive ones span at least `window` seconds, which is
the guarantee. Concurrent callers each get their own slot and wait for it.
"""

from __future__ import annotations

from collections import OrderedDict, deque

__all__ = ["SYNCRO_LIMIT", "SYNCRO_WINDOW_S", "AccountWindows", "SlidingWindow"]

SYNCRO_LIMIT = 180
SYNCRO_WINDOW_S = 60.0


class SlidingWindow:
    """At most `limit` sends in any half-open interval of `window` seconds."""

    __slots__ = ("_blocked_until", "_sent", "limit", "window")

    def __init__(self, limit: int = SYNCRO_LIMIT, window: float = SYNCRO_WINDOW_S) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0

    def reserve(self, now: float) -> float:
        """Book the next send for a request made at `now`: returns its time (>= `now`)."""
        sent = self._sent
        at = max(now, self._blocked_until, sent[-1] if sent else now)
        if len(sent) >= self.limit:
            at = max(at, sent[-self.limit] + self.window)
        sent.append(at)
        # Older than `limit` sends back: no longer needed to place a later one.
        while len(sent) > self.limit:
            sent.popleft()
        return at

    def block(self, until: float) -> None:
        """The provider said 429: nothing is sent before `until` (its Retry-After)."""
        self._blocked_until = max(self._blocked_until, until)

    def idle(self, now: float) -> bool:
        """Nothing booked within the last window: forgetting it changes nothing."""
        return (not self._sent or self._sent[-1] + self.window <= now) \
            and self._blocked_until <= now


class AccountWindows:
    """One `SlidingWindow` per account (subdomain), the idle ones forgotten first."""

    def __init__(self, limit: int = SYNCRO_LIMIT, window: float = SYNCRO_WINDOW_S,
                 max_accounts: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self._max = max_accounts
        self._windows: OrderedDict[str, SlidingWindow] = OrderedDict()

    def get(self, account: str, now: float) -> SlidingWindow:
        w = self._windows.get(account)
        if w is None:
            w = self._windows[account] = SlidingWindow(self.limit, self.window)
            # Only idle windows are forgotten: a busy one must keep counting.
            while len(self._windows) > self._max:
                oldest, candidate = next(iter(self._windows.items()))
                if oldest == account or not candidate.idle(now):
                    break
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(account)
        return w

    def reserve(self, account: str, now: float) -> float:
        return self.get(account, now).reserve(now)

    def block(self, account: str, until: float, now: float) -> None:
        self.get(account, now).block(until)
