"""Internal record MACs (switchboard.record_mac): pure functions, no broker."""

from __future__ import annotations

import logging
import time

import pytest

from switchboard.errors import ConfigError
from switchboard.keys import generate_secret_key_b64
from switchboard.record_mac import MAC_HEADER, RecordGuard, RecordMac, guard_for
from switchboard.settings import Settings

OLD, NEW, OTHER = (generate_secret_key_b64() for _ in range(3))
KEY = b"integration:in_1"
VALUE = b'{"kind":"integration","integrationId":"in_1"}'


def test_a_record_verifies_under_the_key_that_signed_it() -> None:
    mac = RecordMac.from_b64(NEW)
    header = mac.sign("registry", KEY, VALUE)
    assert len(header) == 23 and header[1:7].hex() == mac.key_id
    assert mac.verify("registry", KEY, VALUE, header) is None


def test_another_deployments_key_is_refused() -> None:
    header = RecordMac.from_b64(OTHER).sign("registry", KEY, VALUE)
    assert RecordMac.from_b64(NEW).verify("registry", KEY, VALUE, header) == "unknown_key"


def test_a_key_listed_after_the_first_verifies_and_the_first_signs() -> None:
    old_header = RecordMac.from_b64(OLD).sign("registry", KEY, VALUE)
    rotated = RecordMac.from_b64(f"{NEW},{OLD}")
    assert rotated.verify("registry", KEY, VALUE, old_header) is None
    assert not rotated.signed_under_current(old_header)
    fresh = rotated.sign("registry", KEY, VALUE)
    assert rotated.signed_under_current(fresh)
    assert RecordMac.from_b64(NEW).verify("registry", KEY, VALUE, fresh) is None
    # Once the old key is dropped, what it signed is refused.
    assert RecordMac.from_b64(NEW).verify("registry", KEY, VALUE, old_header) == "unknown_key"


def test_the_mac_binds_topic_kind_key_and_value() -> None:
    mac = RecordMac.from_b64(NEW)
    header = mac.sign("deliveries", KEY, VALUE)
    assert mac.verify("deliveries.parked", KEY, VALUE, header) == "bad_mac"
    assert mac.verify("deliveries", b"integration:in_2", VALUE, header) == "bad_mac"
    assert mac.verify("deliveries", KEY, VALUE + b" ", header) == "bad_mac"
    # Key and value swapped, or their boundary moved, is another record.
    assert mac.verify("deliveries", VALUE, KEY, header) == "bad_mac"
    assert mac.verify("deliveries", KEY + VALUE[:3], VALUE[3:], header) == "bad_mac"
    # The MAC key is not the sealing key nor the master key: derived for records only.
    flipped = header[:-1] + bytes([header[-1] ^ 1])
    assert mac.verify("deliveries", KEY, VALUE, flipped) == "bad_mac"


def test_tombstones_and_missing_keys_are_distinct_from_empty_bytes() -> None:
    mac = RecordMac.from_b64(NEW)
    tomb = mac.sign("registry", KEY, None)
    assert mac.verify("registry", KEY, None, tomb) is None
    assert mac.verify("registry", KEY, b"", tomb) == "bad_mac"
    assert mac.verify("registry", None, None, tomb) == "bad_mac"
    empty = mac.sign("registry", KEY, b"")
    assert mac.verify("registry", KEY, None, empty) == "bad_mac"
    keyless = mac.sign("deliveries", None, VALUE)
    assert mac.verify("deliveries", b"", VALUE, keyless) == "bad_mac"
    assert mac.verify("deliveries", None, VALUE, keyless) is None


def test_malformed_and_missing_headers() -> None:
    mac = RecordMac.from_b64(NEW)
    header = mac.sign("registry", KEY, VALUE)
    assert mac.verify("registry", KEY, VALUE, None) == "unsigned"
    assert mac.verify("registry", KEY, VALUE, b"") == "malformed_mac"
    assert mac.verify("registry", KEY, VALUE, header[:-1]) == "malformed_mac"
    assert mac.verify("registry", KEY, VALUE, b"\x02" + header[1:]) == "malformed_mac"


def test_no_key_no_mac() -> None:
    with pytest.raises(ConfigError):
        RecordMac.from_b64("")
    with pytest.raises(ConfigError):
        RecordMac([])
    assert "hidden" in repr(RecordMac.from_b64(NEW)) and NEW not in repr(RecordMac.from_b64(NEW))


def _guard(mode: str = "enforce") -> RecordGuard:
    return RecordGuard(RecordMac.from_b64(NEW), "p.", mode)


def test_guard_signs_the_deployments_topics_and_replaces_a_forged_header() -> None:
    g = _guard()
    headers = g.sign_headers("p.registry", KEY, VALUE, [("trace", b"1"), (MAC_HEADER, b"x")])
    assert headers is not None
    assert [h[0] for h in headers] == ["trace", MAC_HEADER]
    assert g.verdict("p.registry", KEY, VALUE, headers) is None
    # A topic outside the deployment, or one no reader checks, is left alone.
    assert g.sign_headers("q.registry", KEY, VALUE, None) is None
    assert g.sign_headers("p.deliveries.attempts", KEY, VALUE, None) is None


def test_guard_refuses_unsigned_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    g = _guard()
    with caplog.at_level(logging.WARNING, "switchboard.record_mac"):
        assert not g.admit("p.registry", 0, 7, KEY, VALUE, [])
        assert not g.admit("p.registry", 0, 8, KEY, VALUE, [(MAC_HEADER, b"junk")])
    assert g.refused == {("registry", "unsigned"): 1, ("registry", "malformed_mac"): 1}
    assert g.refused_total == 2
    # One line a second per topic, naming where the record is.
    assert len(caplog.records) == 1 and "p.registry[0]@7" in caplog.text
    # Topics whose readers do not verify (the attempts log) and other deployments pass.
    assert g.admit("p.deliveries.attempts", 0, 1, KEY, VALUE, [])
    assert g.admit("q.registry", 0, 1, KEY, VALUE, [])


def test_accept_unsigned_reads_old_records_but_not_forged_macs() -> None:
    g = _guard("accept-unsigned")
    assert g.admit("p.conversations", 0, 1, KEY, VALUE, [])
    assert g.unsigned_accepted == 1
    forged = RecordMac.from_b64(OTHER).sign("conversations", KEY, VALUE)
    assert not g.admit("p.conversations", 0, 2, KEY, VALUE, [(MAC_HEADER, forged)])
    with pytest.raises(ConfigError):
        _guard("off")


def test_the_setting() -> None:
    assert Settings.from_env({}).record_mac == "enforce"
    assert Settings.from_env({"SWITCHBOARD_RECORD_MAC": "accept-unsigned"}).record_mac \
        == "accept-unsigned"
    with pytest.raises(ConfigError):
        Settings.from_env({"SWITCHBOARD_RECORD_MAC": "off"})
    assert guard_for(Settings()) is None  # no key: a tool that neither signs nor verifies
    s = Settings(secret_key=NEW, topic_prefix="p.")
    assert guard_for(s) is guard_for(s)


def test_cost_per_record_is_microseconds() -> None:
    """Sign + verify of a typical delivery (1 KiB): a few µs, against ~500 µs of CPU that
    a delivery costs end to end (README, Benchmarks)."""
    mac = RecordMac.from_b64(NEW)
    value = b"x" * 1024
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        mac.verify("deliveries", KEY, value, mac.sign("deliveries", KEY, value))
    per = (time.perf_counter() - start) / n
    assert per < 50e-6, per
