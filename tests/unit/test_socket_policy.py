"""The websocket gateways' pure decisions: addresses, socket caps, visitor rates, replays."""

from __future__ import annotations

from switchboard.socket_policy import SocketCounter, VisitorLimits, address_key, replay_start


def test_address_key() -> None:
    assert address_key("203.0.113.7") == "203.0.113.7"
    # One IPv6 client holds a /64: all of it counts as one address.
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
    assert address_key(None) == address_key("") == "?"
    assert address_key("not-an-ip") == "not-an-ip"


def test_socket_counter() -> None:
    c = SocketCounter(2)
    assert c.acquire("a") and c.acquire("a")
    assert not c.acquire("a")
    assert c.acquire("b")
    assert c.count("a") == 2 and len(c) == 2
    c.release("a")
    assert c.acquire("a")
    c.release("a")
    c.release("a")
    c.release("b")
    assert len(c) == 0  # a key at zero is forgotten
    c.release("never")  # releasing more than acquired never goes negative
    assert c.count("never") == 0


def test_visitor_limits_per_address_and_per_integration() -> None:
    lim = VisitorLimits(per_address_rate=1.0, per_address_burst=2,
                        per_integration_rate=1.0, per_integration_burst=3)
    assert lim.new_visitor("a", "i1", 0.0) is None
    assert lim.new_visitor("a", "i1", 0.0) is None
    wait = lim.new_visitor("a", "i1", 0.0)
    assert wait is not None and 0 < wait <= 1.0  # the address's burst is spent
    # Another address still may, until the integration's budget is spent.
    assert lim.new_visitor("b", "i1", 0.0) is None
    assert lim.new_visitor("c", "i1", 0.0) is not None
    # Another integration has its own budget.
    assert lim.new_visitor("c", "i2", 0.0) is None
    # Refills at the rate.
    assert lim.new_visitor("a", "i1", 1.0) is None


def test_address_over_budget_does_not_spend_the_integration() -> None:
    lim = VisitorLimits(per_address_rate=0.001, per_address_burst=1,
                        per_integration_rate=0.001, per_integration_burst=2)
    assert lim.new_visitor("attacker", "i", 0.0) is None
    for _ in range(100):
        assert lim.new_visitor("attacker", "i", 0.0) is not None
    assert lim.new_visitor("visitor", "i", 0.0) is None


def test_replay_start_is_bounded_to_the_conversation() -> None:
    # No conversation yet: nothing to replay.
    assert replay_start(stop=100, cursor=5, cursor_is_ours=True, conversation_start=None) == 100
    # No cursor: the conversation's start.
    assert replay_start(stop=100, cursor=None, cursor_is_ours=False,
                        conversation_start=40) == 40
    # A cursor of its own conversation: just after it.
    assert replay_start(stop=100, cursor=60, cursor_is_ours=True, conversation_start=40) == 61
    # A cursor anywhere else in the shared partition does not count.
    assert replay_start(stop=100, cursor=2, cursor_is_ours=False, conversation_start=40) == 40
    assert replay_start(stop=100, cursor=70, cursor_is_ours=False,
                        conversation_start=40) == 40
    # Never below the conversation's start, never past the tail.
    assert replay_start(stop=100, cursor=10, cursor_is_ours=True, conversation_start=40) == 40
    assert replay_start(stop=100, cursor=500, cursor_is_ours=True, conversation_start=40) == 100
    assert replay_start(stop=100, cursor=None, cursor_is_ours=False,
                        conversation_start=300) == 100
