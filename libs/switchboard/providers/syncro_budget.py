"""Syncro's request budget shared by every process: claims on a Kafka topic, one fold.

Syncro allows 180 requests a minute per account. Each process that calls Syncro writes a
`Claim` (key: the account) to the `syncro.slots` topic before each request and reads the
topic back; every process folds the same records in the same order (one partition per
account) with `Ledger`, so all agree which claims are granted without a coordinator. A
`Block` (a 429's ``Retry-After``) stops the account for every process.

The rule (`Ledger.claim`): time is cut into ticks of `Rule.span` / `Rule.ticks` seconds;
a claim is granted iff it is among the first `Rule.per_tick` claims stamped in its tick
(log order), the account is not blocked then, and it is not stamped more than
`Rule.late` before the account's newest record. Any interval of `span` seconds touches
at most `ticks` + 1 ticks, so it holds at most `per_tick` * (`ticks` + 1) <= `limit`
granted claims. A verdict depends only on the records of its own tick (and the blocks
and newest timestamp of the last few minutes), never on verdicts before it: a process
that starts reading one `Rule.lookback` ago decides every later claim as a process that
read from the beginning does. (A sliding count of granted claims would not: whether a
claim was granted depends on the window before it, and so on back to the first claim.)
Syncro's 180 a minute become bursts of 18 and 162 in any 62 s.

Timestamps come from one clock, the broker's (``LogAppendTime``; Tansu, which keeps
``CreateTime``, runs on one host). A claimant sends only if its claim is granted and it
sends within `late` seconds of starting to write it (`usable`), measured on its own
monotonic clock, so each send lies within `late` after its claim's timestamp, and sends
are at most `limit` in any interval of `span - late` = `window + slack` seconds: `slack`
absorbs differences in how long requests take to reach Syncro. A granted claim that is
not used still counts, which only makes the budget stricter.

Memory: per account, two tick counts and two numbers; an account with nothing in the
last `span` and no block in force is forgotten. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec
from msgspec import Struct

from switchboard.errors import BadRequest

__all__ = [
    "MAX_BLOCK_S",
    "MAX_TICKS",
    "Block",
    "Claim",
    "Ledger",
    "Ledgers",
    "Rule",
    "SlotRecord",
    "Verdict",
    "decode",
    "encode",
    "usable",
]

# The longest a 429 blocks every process (a longer Retry-After is honoured by whoever got
# it, and the next 429 blocks again). Bounds how far back a starting process reads.
MAX_BLOCK_S = 300.0
# Ticks per span at most (Syncro: 9 ticks of 6.9 s, 18 claims each).
MAX_TICKS = 9


class Claim(Struct, frozen=True, tag="claim"):
    """One process wants to send one request to the record's account (its key)."""

    by: str  # the claimant process's random id
    n: int  # its sequence number, so it recognises its own claim when read back


class Block(Struct, frozen=True, tag="block"):
    """Syncro answered 429: nobody sends to the account for `seconds` from the record's
    timestamp."""

    seconds: float


SlotRecord = Claim | Block
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SlotRecord)


def encode(record: SlotRecord) -> bytes:
    return _encoder.encode(record)


def decode(data: bytes) -> SlotRecord:
    """A record's value (BadRequest if it is not one of ours)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadRequest("invalid_slot_record", str(exc)) from None


class Rule(Struct, frozen=True):
    """`limit` requests in any `window` seconds; `late`: the longest a granted claim may
    wait before its request goes out; `slack`: margin for when requests arrive."""

    limit: int
    window: float
    late: float
    slack: float

    @classmethod
    def for_budget(cls, limit: int, window: float) -> Rule:
        """The margins for a budget: a tenth of the window each, at most 1 s (Syncro's
        minute is counted over 62 s; a compressed 1 s window over 1.2 s)."""
        if limit < 2 or window <= 0:
            raise ValueError("limit must be >= 2 and window > 0")
        margin = min(1.0, window / 10)
        return cls(limit, window, margin, margin)

    @property
    def span(self) -> float:
        """The interval claims are counted over."""
        return self.window + self.late + self.slack

    @property
    def ticks(self) -> int:
        """Ticks per span: more is smoother, fewer allows larger bursts."""
        return min(MAX_TICKS, self.limit - 1)

    @property
    def tick(self) -> float:
        return self.span / self.ticks

    @property
    def per_tick(self) -> int:
        return self.limit // (self.ticks + 1)

    @property
    def lookback(self) -> float:
        """How far back a process starting now must read to decide the next claim."""
        return self.span + self.late + MAX_BLOCK_S


class Verdict(Struct, frozen=True):
    """What the fold says of one claim: `granted`, its timestamp `at`, and if denied the
    earliest timestamp at which a new claim could be granted (`retry_at`)."""

    granted: bool
    at: float
    retry_at: float


class Ledger:
    """The fold of one account's records."""

    __slots__ = ("_counts", "blocked_until", "newest", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self._counts: dict[int, int] = {}  # tick number -> claims stamped in it
        self.newest = float("-inf")
        self.blocked_until = float("-inf")

    def claim(self, at: float) -> Verdict:
        """Decide the claim stamped `at`, the next record of the account."""
        rule = self.rule
        self.newest = max(self.newest, at)
        self._forget()
        if at < self.newest - rule.late:  # stamped behind the others: claim again
            return Verdict(False, at, at)
        if at < self.blocked_until:
            return Verdict(False, at, self.blocked_until)
        tick = int(at // rule.tick)
        taken = self._counts.get(tick, 0)
        if taken >= rule.per_tick:
            return Verdict(False, at, (tick + 1) * rule.tick)
        self._counts[tick] = taken + 1
        return Verdict(True, at, at)

    def block(self, at: float, seconds: float) -> None:
        """A 429 stamped `at` with ``Retry-After`` `seconds`."""
        self.newest = max(self.newest, at)
        seconds = min(max(seconds, 0.0), MAX_BLOCK_S)
        self.blocked_until = max(self.blocked_until, at + seconds)

    def next_free(self, now: float, pending: int = 0) -> float:
        """When a claim made at `now` could be granted, with `pending` own claims not yet
        read back counted as granted: `now` or later. An estimate (others may claim
        meanwhile), used to wait instead of claiming in vain."""
        rule = self.rule
        start = max(now, self.blocked_until)
        tick = int(start // rule.tick)
        ahead = self._counts.get(tick, 0) + pending - rule.per_tick
        if ahead < 0:
            return start
        return (tick + 1 + ahead // rule.per_tick) * rule.tick

    def idle(self, now: float) -> bool:
        """Nothing within the span before `now` and no block in force."""
        return self.newest + self.rule.span + self.rule.late <= now \
            and self.blocked_until <= now

    def _forget(self) -> None:
        # A claim stamped before newest - late is refused unread: older ticks never count.
        oldest = int((self.newest - self.rule.late) // self.rule.tick)
        for tick in [t for t in self._counts if t < oldest]:
            del self._counts[tick]


class Ledgers:
    """One `Ledger` per account; the idle ones are forgotten first beyond `max_accounts`."""

    def __init__(self, rule: Rule, max_accounts: int = 10_000) -> None:
        self.rule = rule
        self._max = max_accounts
        self._by_account: OrderedDict[str, Ledger] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_account)

    def get(self, account: str) -> Ledger:
        ledger = self._by_account.get(account)
        if ledger is None:
            ledger = self._by_account[account] = Ledger(self.rule)
        else:
            self._by_account.move_to_end(account)
        return ledger

    def peek(self, account: str) -> Ledger | None:
        return self._by_account.get(account)

    def apply(self, account: str, at: float, record: SlotRecord) -> Verdict | None:
        """Fold one record of `account` stamped `at`; a claim's verdict."""
        ledger = self.get(account)
        if isinstance(record, Block):
            ledger.block(at, record.seconds)
            self._trim(at)
            return None
        verdict = ledger.claim(at)
        self._trim(at)
        return verdict

    def _trim(self, now: float) -> None:
        # Forgetting an idle ledger changes no later verdict: nothing in it can count.
        while len(self._by_account) > self._max:
            account, ledger = next(iter(self._by_account.items()))
            if not ledger.idle(now):
                break
            del self._by_account[account]

    def forget_idle(self, now: float) -> None:
        for account in [a for a, led in self._by_account.items() if led.idle(now)]:
            del self._by_account[account]


def usable(verdict: Verdict, waited: float, rule: Rule) -> bool:
    """May the claimant send on `verdict`, `waited` seconds (its own monotonic clock)
    after it started writing the claim? Only a granted claim, and only within `late`."""
    return verdict.granted and waited <= rule.late
