"""Syncro's shared budget, the pure fold: what is granted, what waits, what a 429 blocks,
and that no interleaving of claims from several processes ever grants more than the
limit in any window (nor sends more, with the claim-to-send delay each claimant may take)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.errors import BadRequest
from switchboard.providers.syncro_budget import (
    MAX_BLOCK_S,
    Block,
    Claim,
    Ledger,
    Ledgers,
    Rule,
    decode,
    encode,
    usable,
)


def most_in_window(times: list[float], window: float) -> int:
    """The most of `times` in any half-open interval (t - window, t]."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_syncros_minute_is_counted_over_62_seconds_in_ticks() -> None:
    rule = Rule.for_budget(180, 60.0)
    assert (rule.late, rule.slack, rule.span) == (1.0, 1.0, 62.0)
    # 9 ticks of 6.9 s, 18 claims each: any 62 s touch 10 ticks, 180 claims at most.
    assert (rule.ticks, rule.per_tick) == (9, 18)
    assert rule.per_tick * (rule.ticks + 1) <= rule.limit
    small = Rule.for_budget(60, 1.0)
    assert small.span == pytest.approx(1.2) and small.per_tick == 6
    assert rule.lookback == 62.0 + 1.0 + MAX_BLOCK_S
    tiny = Rule.for_budget(2, 1.0)
    assert (tiny.ticks, tiny.per_tick) == (1, 1)
    with pytest.raises(ValueError):
        Rule.for_budget(1, 60.0)
    with pytest.raises(ValueError):
        Rule.for_budget(2, 0.0)


def test_a_full_tick_denies_until_the_next_one() -> None:
    rule = Rule.for_budget(6, 10.0)  # span 12, 5 ticks of 2.4 s, 1 claim each
    ledger = Ledger(rule)
    assert ledger.claim(0.0).granted
    denied = ledger.claim(1.0)
    assert not denied.granted and denied.retry_at == pytest.approx(2.4)
    # Denied claims do not count.
    assert ledger.claim(2.4).granted
    assert not ledger.claim(2.5).granted
    assert ledger.claim(4.9).granted


def test_a_bucket_would_send_twice_the_budget_the_ledger_does_not() -> None:
    # A bucket of 180 refilling at 3/s, asked 1,000 times at once, sends 180 at once and
    # then one every third of a second: 359 within a minute.
    bucket = [0.0] * 180 + [k / 3.0 for k in range(1, 821)]
    assert most_in_window(bucket, 60.0) == 359
    rule = Rule.for_budget(180, 60.0)
    ledger = Ledger(rule)
    granted, t = [], 0.0
    while len(granted) < 1000:
        v = ledger.claim(t)
        if v.granted:
            granted.append(t)
        t = max(t + 0.01, v.retry_at) if not v.granted else t + 0.001
    assert most_in_window(granted, rule.span) <= 180
    assert most_in_window(granted, 60.0) <= 180
    # ... and still uses most of it: 18 at once, 162 in 62 s.
    assert granted[:18] == pytest.approx([k * 0.001 for k in range(18)])
    assert most_in_window(granted, rule.span) >= 162


def test_a_429_blocks_every_claim_until_retry_after() -> None:
    ledger = Ledger(Rule.for_budget(180, 60.0))
    assert ledger.claim(0.0).granted
    ledger.block(1.0, 30.0)
    v = ledger.claim(2.0)
    assert not v.granted and v.retry_at == 31.0
    assert ledger.next_free(2.0) == 31.0
    assert ledger.claim(31.0).granted
    # A Retry-After of a day blocks every process for MAX_BLOCK_S at most.
    ledger.block(40.0, 86400.0)
    assert ledger.blocked_until == 40.0 + MAX_BLOCK_S


def test_a_claim_stamped_behind_the_others_is_denied() -> None:
    ledger = Ledger(Rule.for_budget(10, 10.0))  # late 1 s
    assert ledger.claim(100.0).granted
    assert ledger.claim(99.5).granted  # within `late`: clock jitter
    v = ledger.claim(98.0)
    assert not v.granted and v.retry_at == 98.0  # claim again at once


def test_next_free_counts_own_claims_in_flight() -> None:
    rule = Rule.for_budget(12, 10.0)  # span 12, 9 ticks of 4/3 s, 1 claim each
    ledger = Ledger(Rule.for_budget(30, 10.0))  # 9 ticks of 4/3 s, 3 claims each
    ledger.claim(0.0)
    ledger.claim(0.1)
    assert ledger.next_free(0.2) == 0.2
    assert ledger.next_free(0.2, pending=1) == pytest.approx(4 / 3)
    assert ledger.next_free(0.2, pending=4) == pytest.approx(8 / 3)
    assert rule.per_tick == 1


def test_a_claim_is_used_only_if_granted_and_read_back_in_time() -> None:
    rule = Rule.for_budget(180, 60.0)
    ledger = Ledger(rule)
    v = ledger.claim(0.0)
    assert usable(v, 0.02, rule)
    assert not usable(v, 1.5, rule)  # read back too late: it counts, unused
    ledger = Ledger(Rule.for_budget(2, 60.0))
    ledger.claim(0.0)
    assert not usable(ledger.claim(0.1), 0.0, rule)  # denied


def test_records_round_trip_and_garbage_is_refused() -> None:
    assert decode(encode(Claim("p1", 7))) == Claim("p1", 7)
    assert decode(encode(Block(12.5))) == Block(12.5)
    with pytest.raises(BadRequest):
        decode(b'{"type": "claim"}')
    with pytest.raises(BadRequest):
        decode(b"\xff")


def test_memory_stays_bounded() -> None:
    rule = Rule.for_budget(5, 1.0)
    ledgers = Ledgers(rule, max_accounts=3)
    for k in range(10_000):
        t = k * 0.01
        ledgers.apply(f"acct{k % 50}", t, Claim("p", k))
        ledger = ledgers.peek(f"acct{k % 50}")
        assert ledger is not None and len(ledger._counts) <= 2
    # Idle accounts are forgotten; a busy one is kept whatever the bound.
    assert len(ledgers) <= 50
    ledgers.forget_idle(10_000 * 0.01 + 10.0)
    assert len(ledgers) == 0


def test_forgetting_an_idle_account_changes_no_verdict() -> None:
    rule = Rule.for_budget(4, 1.0)
    kept, fresh = Ledgers(rule), Ledgers(rule)
    for t in (0.0, 0.1, 0.2):
        kept.apply("a", t, Claim("p", 0))
        fresh.apply("a", t, Claim("p", 0))
    fresh.forget_idle(5.0)
    assert fresh.peek("a") is None
    for t in (5.0, 5.1, 5.2, 6.5):
        assert kept.apply("a", t, Claim("p", 0)) == fresh.apply("a", t, Claim("p", 0))


# ---- any interleaving of several processes ------------------------------------------


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[Rule, list[tuple[int, float, float]]]:
    """Claims of up to 4 processes in log order: (process, timestamp, claim-to-send
    delay). Timestamps mostly grow (one broker clock) with jitter up to `late` and more."""
    limit = draw(st.integers(2, 40))
    window = draw(st.sampled_from([0.5, 1.0, 3.0, 60.0]))
    rule = Rule.for_budget(limit, window)
    n = draw(st.integers(1, 200))
    t = 0.0
    out = []
    for _ in range(n):
        t += draw(st.floats(0.0, window / 4))
        jitter = draw(st.floats(-2 * rule.late, rule.late))
        delay = draw(st.floats(0.0, 2 * rule.late))
        out.append((draw(st.integers(0, 3)), max(0.0, t + jitter), delay))
    return rule, out


@settings(max_examples=300, deadline=None)
@given(interleavings())
def test_no_interleaving_grants_or_sends_more_than_the_limit(
        case: tuple[Rule, list[tuple[int, float, float]]]) -> None:
    rule, claims = case
    # Every process folds the same log, so they agree on every verdict.
    ledgers = Ledgers(rule)
    granted: list[float] = []
    sends: list[float] = []
    verdicts = []
    for process, at, delay in claims:
        v = ledgers.apply("acct", at, Claim(str(process), 0))
        assert v is not None
        verdicts.append(v)
        if v.granted:
            granted.append(at)
        if usable(v, delay, rule):
            sends.append(at + delay)  # the send lies within `late` after the claim
    assert most_in_window(granted, rule.span) <= rule.limit
    # Requests reach Syncro within `slack` of each other's timing: any `window` holds at
    # most `limit` even after that margin.
    assert most_in_window(sends, rule.window + rule.slack) <= rule.limit
    # A process that starts reading one lookback before a claim (skipping what is older)
    # decides it, and every later one, the same way.
    if claims:
        start = len(claims) // 2
        cut = claims[start][1] - rule.lookback
        late_reader = Ledgers(rule)
        for i, (process, at, _d) in enumerate(claims):
            if i < start and at <= cut:
                continue
            v = late_reader.apply("acct", at, Claim(str(process), 0))
            if i >= start:
                assert v == verdicts[i]
