"""`switchboard doctor`'s verdicts from what it measured (switchboard.doctor)."""

from __future__ import annotations

import os

import pytest

from switchboard.doctor import (
    Check,
    KeyFindings,
    failed,
    key_check,
    render,
    skew_check,
    topic_checks,
)
from switchboard.kafka_topics import topic_specs
from switchboard.settings import Settings

S = Settings(topic_prefix="p.", partitions=4)
SPECS = topic_specs(S)
ALL = {s.name: s.partitions for s in SPECS}


def test_topics_as_expected_or_not_yet_there() -> None:
    [ok] = topic_checks(SPECS, ALL, [], prefix="p.", tansu=False)
    assert ok.status == "ok" and f"all {len(SPECS)} topics" in ok.text
    [ok] = topic_checks(SPECS, ALL, [], prefix="p.", tansu=True)
    assert ok.status == "ok" and "Tansu keeps no topic configs" in ok.text
    [none] = topic_checks(SPECS, {}, [], prefix="p.", tansu=False)
    assert none.status == "warn" and "SWITCHBOARD_TOPIC_PREFIX" in none.text
    some = dict(ALL)
    del some["p.sync.jobs"]
    [missing] = topic_checks(SPECS, some, [], prefix="p.", tansu=False)
    assert missing.status == "warn" and "p.sync.jobs" in missing.text


def test_partition_counts_and_config_problems() -> None:
    wrong = {**ALL, "p.registry": 3, "p.activities": 8}
    checks = topic_checks(SPECS, wrong, [], prefix="p.", tansu=False)
    assert [(c.status, c.text.split()[0]) for c in checks] == [
        ("FAIL", "p.registry"), ("warn", "p.activities")]
    assert "SWITCHBOARD_PARTITIONS=8" in checks[1].text
    # The count differs from the setting (warn), and from `deliveries` (FAIL).
    lanes = topic_checks(SPECS, {**ALL, "p.deliveries.parked": 2}, [], prefix="p.",
                         tansu=False)
    assert [c.status for c in lanes] == ["warn", "FAIL"]
    assert "same deliverer" in lanes[1].text
    [bad] = topic_checks(SPECS, ALL, ["topic p.registry: cleanup.policy delete, needs compact"],
                         prefix="p.", tansu=False)
    assert bad.status == "FAIL" and "kafka-configs.sh" in bad.text
    assert failed([bad]) and not failed([Check("warn", "x", "y")])


def test_clock_skew() -> None:
    assert skew_check(0.4, 0.6, 300, "http://h").status == "ok"
    warn = skew_check(-12.0, 0.6, 300, "http://h")
    assert warn.status == "warn" and "12.0 s behind" in warn.text
    fail = skew_check(400.0, 0.6, 300, "http://h")
    assert fail.status == "FAIL" and "SWITCHBOARD_TIMESTAMP_TOLERANCE_S" in fail.text


def test_secret_key_verdicts_name_the_key_never_show_it() -> None:
    base = dict(key_ids=("aaaaaaaaaaaa",), records=4, macs_bad=0, unsigned=0, sealed=3,
                unopened=0)
    assert key_check(KeyFindings(**base), "SWITCHBOARD_SECRET_KEY").status == "ok"  # type: ignore[arg-type]
    empty = key_check(KeyFindings(**{**base, "records": 0}), "x")  # type: ignore[arg-type]
    assert empty.status == "ok" and "empty" in empty.text
    wrong = key_check(KeyFindings(**{**base, "unopened": 3, "macs_bad": 4,  # type: ignore[arg-type]
                                     "foreign_key_ids": ("bbbbbbbbbbbb",)}),
                      "SWITCHBOARD_SECRET_KEY")
    assert wrong.status == "FAIL"
    assert ("3 of 3 sealed values do not open and 4 of 4 records (registry, sync profiles) "
            "fail their MAC") in wrong.text
    assert "key aaaaaaaaaaaa from SWITCHBOARD_SECRET_KEY" in wrong.text
    assert "bbbbbbbbbbbb" in wrong.text and "switchboard reseal" in wrong.text
    old = key_check(KeyFindings(**{**base, "old_key_values": 2}), "x")  # type: ignore[arg-type]
    assert old.status == "warn" and "reseal" in old.text
    assert render(Check("FAIL", "secret key", "why")) == "FAIL  secret key  why"


def test_configuration_is_checked_as_serve_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from switchboard.keys import generate_secret_key_b64
    from switchboard.services.cli_broker import Target
    from switchboard.services.doctor_cli import check_configuration

    for name in [n for n in os.environ if n.startswith("SWITCHBOARD_")]:
        monkeypatch.delenv(name)
    target = Target("127.0.0.1:9092", "kafka", "--bootstrap")
    monkeypatch.setenv("SWITCHBOARD_SECRET_KEY", generate_secret_key_b64())
    _, [ok] = check_configuration(target)
    assert ok.status == "ok" and "`switchboard serve` accepts it" in ok.text

    monkeypatch.setenv("SWITCHBOARD_ADMIN_TOKEN", "short")
    _, [short] = check_configuration(target)
    assert short.status == "FAIL" and "SWITCHBOARD_ADMIN_TOKEN must be at least" in short.text
    monkeypatch.delenv("SWITCHBOARD_ADMIN_TOKEN")

    monkeypatch.setenv("SWITCHBOARD_KAFKA_SASL_USERNAME", "hub")
    _, [sasl] = check_configuration(target)
    assert sasl.status == "FAIL" and "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in \
        sasl.text
    monkeypatch.delenv("SWITCHBOARD_KAFKA_SASL_USERNAME")

    monkeypatch.setenv("SWITCHBOARD_PARTITIONS", "many")
    settings, [bad] = check_configuration(target)
    assert bad.status == "FAIL" and "SWITCHBOARD_PARTITIONS='many' is not a number" in bad.text
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"  # the rest goes on

    monkeypatch.delenv("SWITCHBOARD_PARTITIONS")
    monkeypatch.delenv("SWITCHBOARD_SECRET_KEY")
    _, [nokey] = check_configuration(target)
    assert nokey.status == "FAIL" and "SWITCHBOARD_SECRET_KEY" in nokey.text
