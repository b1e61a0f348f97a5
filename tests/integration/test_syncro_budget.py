"""Syncro's budget is one per account across every process, counted on Kafka: two hub
processes (this one and a real second one, killed and restarted half-way) send 1,000
requests to one account of the loopback fake and never more than the limit arrive in any
window; a 429 answered to one stack stops the other until its Retry-After."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from switchboard.services.channels.syncro_client import SyncroClient
from switchboard.services.channels.syncro_slots import SyncroSlots
from switchboard.services.runtime import Runtime
from switchboard.settings import Settings, env_names
from tests.conftest import make_settings
from tests.fakes.syncro import Account, FakeSyncro
from tests.fakes.syncro_process import SyncroProcess

LIMIT, WINDOW = 60, 1.0  # Syncro's 180 a minute, compressed
ROOT = Path(__file__).resolve().parents[2]


def most_in_window(times: list[float], window: float) -> int:
    """The most of `times` in any half-open interval of `window` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeSyncro]:
    f = await FakeSyncro().start()
    try:
        yield f
    finally:
        await f.stop()


def budget_settings(broker: Any, fake: FakeSyncro | SyncroProcess) -> Settings:
    return make_settings(broker, syncro_api_url=fake.api_url(), syncro_rate_limit=LIMIT,
                         syncro_rate_window_s=WINDOW, provider_timeout_s=5.0)


async def spawn_stack(settings: Settings, account: Account, count: int, path: str
                      ) -> asyncio.subprocess.Process:
    """Another process with the same settings (so the same topics and keys)."""
    env = dict(os.environ)
    for name, (var, _default) in env_names().items():
        value = getattr(settings, name)
        env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.syncro_stack", account.subdomain,
        account.token, str(count), path, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE)


async def wait_until_async(check: Callable[[], Awaitable[bool]], timeout: float = 60.0
                           ) -> None:
    """Poll `check` (the fake's log, in another process) until it says yes."""
    async with asyncio.timeout(timeout):
        for _ in iter(int, 1):
            if await check():
                return
            await asyncio.sleep(0.05)


async def wait_until(check: Any, timeout: float = 60.0) -> None:
    """Poll `check` (state of the fake or of another process: nothing to wait on)."""
    async with asyncio.timeout(timeout):
        for _ in iter(int, 1):
            if check():
                return
            await asyncio.sleep(0.02)


async def test_two_processes_share_one_budget_across_a_restart(broker: Any) -> None:
    # The fake counts arrivals in a process of its own: served by this process's loop, a
    # pause here would stamp the requests queued meanwhile as one burst.
    account = Account("budget" + uuid.uuid4().hex[:6], "tok")
    fake = await SyncroProcess(account.subdomain, account.token).start()
    settings = budget_settings(broker, fake)
    here = Runtime(settings)
    try:
        await here.start()
        client = SyncroClient(here)
        other = await spawn_stack(settings, account, 500, "/customers")
        assert other.stdout is not None
        assert await other.stdout.readline() == b"ready\n"

        async def one() -> None:
            resp = await client.request(account.subdomain, "tok", "GET", "/me")
            assert resp.status_code == 200

        ours = asyncio.gather(*(one() for _ in range(500)))

        async def half_way() -> bool:
            return (await fake.log())[1].count("/customers") >= 150

        # Half-way through, the other process is killed; a new one sends the rest.
        await wait_until_async(half_way)
        other.kill()
        await other.wait()
        killed_at = time.monotonic()
        sent = (await fake.log())[1].count("/customers")
        again = await spawn_stack(settings, account, 500 - sent, "/customers")
        out, _ = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0 and out == b"ready\ndone\n"
        await asyncio.wait_for(ours, 120)
        times, paths = await fake.log()
    finally:
        await here.stop()
        await fake.stop()

    assert len(times) == 1000 and paths.count("/customers") == 500
    # One budget for both, not one each: never more than LIMIT in any WINDOW ...
    assert most_in_window(times, WINDOW) <= LIMIT
    # ... while both sent at the same time, before and after the restart.
    ours_at = [t for t, p in zip(times, paths, strict=True) if p == "/me"]
    theirs_at = [t for t, p in zip(times, paths, strict=True) if p == "/customers"]
    restarted = [t for t in theirs_at if t > killed_at]
    assert ours_at[-1] > restarted[0] and theirs_at[0] < ours_at[-1]
    # And the budget was used, not wasted: 1,000 at 60 a second take at least 16 s.
    elapsed = times[-1] - times[0]
    assert elapsed >= (1000 - LIMIT) / LIMIT * WINDOW
    assert 1000 / elapsed > 0.5 * LIMIT / WINDOW


async def test_a_429_to_one_stack_stops_the_other_until_retry_after(
        broker: Any, fake: FakeSyncro) -> None:
    settings = budget_settings(broker, fake)
    account = fake.add_account("busy" + uuid.uuid4().hex[:6], "tok")
    one, two = Runtime(settings), Runtime(settings)
    await one.start()
    await two.start()
    try:
        first, second = SyncroClient(one), SyncroClient(two)
        for c in (first, second):  # both readers running
            assert (await c.request(account.subdomain, "tok", "GET", "/me")).status_code == 200
        fake.retry_after, fake.refuse_next = 2, 1
        retried = asyncio.create_task(first.request(account.subdomain, "tok", "GET", "/me"))
        await wait_until(lambda: SyncroSlots.for_runtime(one).blocks == 1)
        refused_at = account.requests[2]
        asked = time.monotonic()
        resp = await second.request(account.subdomain, "tok", "GET", "/customers")
        assert resp.status_code == 200 and (await retried).status_code == 200
    finally:
        fake.refuse_next = 0
        await one.stop()
        await two.stop()
    assert account.paths == ["/me", "/me", "/me", "/customers", "/me"] or \
        account.paths == ["/me", "/me", "/me", "/me", "/customers"]
    # The other stack asked at once, and waited the Retry-After out like the first.
    assert asked - refused_at < 0.5
    assert min(account.requests[3:]) - refused_at >= 2.0 - 0.05


async def test_a_reader_that_starts_late_counts_the_claims_before_it(
        broker: Any, fake: FakeSyncro) -> None:
    # Two requests in any 3 s: ticks of 3.6 s (3 s and the margins), one request each.
    settings = make_settings(broker, syncro_api_url=fake.api_url(), syncro_rate_limit=2,
                             syncro_rate_window_s=3.0)
    account = fake.add_account("late" + uuid.uuid4().hex[:6], "tok")
    one, two = Runtime(settings), Runtime(settings)
    await one.start()
    await two.start()  # its budget reader starts with its first Syncro request
    try:
        first, second = SyncroClient(one), SyncroClient(two)
        tick = SyncroSlots.for_runtime(two).rule.tick
        assert tick == pytest.approx(3.6)
        # Claim early in a tick (ticks are cut on the broker's clock, this host's).
        await wait_until(lambda: time.time() % tick < 0.5, timeout=10)
        assert (await first.request(account.subdomain, "tok", "GET", "/me")).status_code == 200
        assert not SyncroSlots.for_runtime(two).reading
        # A fresh reader that skipped the claim above would send at once.
        resp = await second.request(account.subdomain, "tok", "GET", "/customers")
        assert resp.status_code == 200
    finally:
        await one.stop()
        await two.stop()
    assert account.paths == ["/me", "/customers"]
    assert account.requests[1] - account.requests[0] >= 2.5


async def test_the_reader_runs_only_while_syncro_is_called(broker: Any,
                                                           fake: FakeSyncro) -> None:
    settings = budget_settings(broker, fake)
    account = fake.add_account("idle" + uuid.uuid4().hex[:6], "tok")
    runtime = Runtime(settings)
    await runtime.start()
    try:
        # A process that never calls Syncro never reads the topic.
        assert not SyncroSlots.for_runtime(runtime).reading
        slots = SyncroSlots(runtime, idle_stop_s=0.5)
        client = SyncroClient(runtime, slots)
        # (A claim read back later than the rule allows is claimed again, so a loaded
        # machine may write more than one claim per request: count, not equality.)
        assert (await client.request(account.subdomain, "tok", "GET", "/me")).is_success
        assert slots.reading and slots.claims >= 1
        before = slots.claims
        await wait_until(lambda: not slots.reading, timeout=15)  # idle: stopped
        assert slots.claims == before  # stopped, and nothing claimed while stopped
        # ... and started again, from the claims before it, by the next request.
        assert (await client.request(account.subdomain, "tok", "GET", "/me")).is_success
        assert slots.reading and slots.claims > before
        assert account.paths[-2:] == ["/me", "/me"]
        await slots.stop()
        assert not slots.reading
    finally:
        await runtime.stop()


def test_settings_are_read_from_the_environment() -> None:
    s = Settings.from_env({"SWITCHBOARD_SYNCRO_RATE_LIMIT": "50",
                           "SWITCHBOARD_SYNCRO_RATE_WINDOW_S": "1.5"})
    assert (s.syncro_rate_limit, s.syncro_rate_window_s) == (50, 1.5)
    assert (Settings().syncro_rate_limit, Settings().syncro_rate_window_s) == (180, 60.0)
    from switchboard.errors import ConfigError
    for bad in ({"SWITCHBOARD_SYNCRO_RATE_LIMIT": "1"},
                {"SWITCHBOARD_SYNCRO_RATE_WINDOW_S": "0"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
    assert msgspec.structs.asdict(s)["syncro_rate_limit"] == 50
