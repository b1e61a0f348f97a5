"""The Slack install's `state`: UNIX time + client secret, within the window."""

from __future__ import annotations

import pytest

from switchboard.errors import BadRequest
from switchboard.providers.slack_state import check_state

SECRET = "8f14e45fceea167a5a36dedd4bea2543"  # starts with a digit, like many real ones
NOW = 1_750_000_000


def _code(state: object, secret: str = SECRET, now: float = NOW) -> str:
    with pytest.raises(BadRequest) as err:
        check_state(state, secret, now_s=now, window_s=600)
    assert err.value.field == "configuration.state"
    # Never a word of the secret, nor of the state, in what the caller sees.
    assert SECRET not in err.value.description and SECRET[:8] not in err.value.description
    return err.value.code


def test_a_fresh_state_with_our_secret_passes() -> None:
    check_state(f"{NOW}{SECRET}", SECRET, now_s=NOW, window_s=600)
    check_state(f"{NOW - 599}{SECRET}", SECRET, now_s=NOW, window_s=600)
    check_state(f"{NOW + 30}{SECRET}", SECRET, now_s=NOW, window_s=600)  # a fast clock
    check_state(f"{NOW * 1000 + 123}{SECRET}", SECRET, now_s=NOW, window_s=600)  # Date.now()


def test_wrong_malformed_or_stale_states_are_refused() -> None:
    assert _code(None) == "missing_state" and _code("") == "missing_state"
    assert _code(f"{NOW}not-the-secret-at-all-0123456789") == "invalid_state"
    assert _code(f"{NOW}{SECRET[:-1]}x") == "invalid_state"
    assert _code(SECRET) == "invalid_state"  # no time
    assert _code(f"t{NOW}{SECRET}") == "invalid_state"
    assert _code(f"{NOW}.{SECRET}") == "invalid_state"
    assert _code(f"{'9' * 40}{SECRET}") == "invalid_state"  # a time int() should not see
    assert _code(12345) == "invalid_state"
    assert _code("\ud800" + SECRET) == "invalid_state"
    assert _code(f"{NOW}{SECRET}", secret="") == "invalid_state"
    assert _code(f"{NOW - 601}{SECRET}") == "stale_state"
    assert _code(f"1712000000{SECRET}") == "stale_state"
    assert _code(f"{NOW + 601}{SECRET}") == "stale_state"
