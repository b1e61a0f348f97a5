"""The Kafka client settings, replication and topic checks: pure functions."""

from __future__ import annotations

import ssl

import pytest

from switchboard.broker_config import (
    Replication,
    TopicState,
    client_kwargs,
    resolve_replication,
    security_problems,
    topic_problems,
)
from switchboard.errors import ConfigError
from switchboard.settings import Settings, env_names


def test_plaintext_by_default() -> None:
    assert client_kwargs(Settings(kafka_bootstrap_servers="k:9092")) == {
        "bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl(mechanism: str) -> None:
    tls = ssl.create_default_context()
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                 kafka_sasl_username="hub", kafka_sasl_password="pw")
    assert client_kwargs(s, tls) == {
        "bootstrap_servers": s.kafka_bootstrap_servers, "security_protocol": "SASL_SSL",
        "ssl_context": tls, "sasl_mechanism": mechanism, "sasl_plain_username": "hub",
        "sasl_plain_password": "pw"}


def test_ssl_only_and_sasl_plaintext() -> None:
    tls = ssl.create_default_context()
    ssl_only = client_kwargs(Settings(kafka_security_protocol="SSL"), tls)
    assert ssl_only["ssl_context"] is tls and "sasl_mechanism" not in ssl_only
    sasl = client_kwargs(Settings(kafka_security_protocol="SASL_PLAINTEXT",
                                  kafka_sasl_username="u", kafka_sasl_password="p"))
    assert "ssl_context" not in sasl and sasl["sasl_mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize(("values", "says"), [
    ({"kafka_security_protocol": "TLS"}, "expected one of PLAINTEXT, SSL"),
    ({"kafka_security_protocol": "SASL_SSL"}, "needs SWITCHBOARD_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p", "kafka_sasl_mechanism": "GSSAPI"}, "MECHANISM='GSSAPI'"),
    # Credentials or TLS files that the protocol would ignore: refused, never silently
    # sent in clear or dropped.
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "use SASL_SSL"),
    ({"kafka_ssl_ca_file": "/ca.pem"}, "use SSL or SASL_SSL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/c.pem"}, "go together"),
    ({"topic_check": "ignore"}, "SWITCHBOARD_TOPIC_CHECK='ignore'"),
])
def test_inconsistent_settings_are_refused(values: dict[str, str], says: str) -> None:
    s = Settings(**values)
    assert any(says in p for p in security_problems(s)), security_problems(s)
    with pytest.raises(ConfigError, match=r"SWITCHBOARD|PLAINTEXT"):
        client_kwargs(s, ssl.create_default_context())


def test_a_password_never_appears_in_a_problem() -> None:
    s = Settings(kafka_security_protocol="PLAINTEXT", kafka_sasl_username="u",
                 kafka_sasl_password="hunter2-secret")
    assert "hunter2" not in " ".join(security_problems(s))


def test_settings_come_from_the_environment() -> None:
    s = Settings.from_env({"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                           "SWITCHBOARD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                           "SWITCHBOARD_KAFKA_SASL_USERNAME": "hub",
                           "SWITCHBOARD_KAFKA_SASL_PASSWORD": "pw",
                           "SWITCHBOARD_KAFKA_SSL_CA_FILE": "/etc/kafka/ca.pem",
                           "SWITCHBOARD_KAFKA_SSL_CHECK_HOSTNAME": "false",
                           "SWITCHBOARD_TOPIC_REPLICATION_FACTOR": "5",
                           "SWITCHBOARD_TOPIC_MIN_INSYNC_REPLICAS": "3",
                           "SWITCHBOARD_TOPIC_CHECK": "warn"})
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism, s.kafka_ssl_ca_file) == (
        "SASL_SSL", "SCRAM-SHA-256", "/etc/kafka/ca.pem")
    assert not s.kafka_ssl_check_hostname
    assert resolve_replication(s, 5) == Replication(5, 3)
    assert s.topic_check == "warn"
    assert env_names()["kafka_sasl_password"][0] == "SWITCHBOARD_KAFKA_SASL_PASSWORD"


@pytest.mark.parametrize(("brokers", "want"), [
    (1, Replication(1, 1)), (2, Replication(2, 1)), (3, Replication(3, 2)),
    (9, Replication(3, 2)), (0, Replication(1, 1)),
])
def test_auto_replication_follows_the_cluster(brokers: int, want: Replication) -> None:
    assert resolve_replication(Settings(), brokers) == want


def test_explicit_replication() -> None:
    assert resolve_replication(Settings(topic_replication_factor="2"), 3) == Replication(2, 1)
    assert resolve_replication(Settings(topic_replication_factor="3",
                                        topic_min_insync_replicas="3"), 4) == Replication(3, 3)
    with pytest.raises(ConfigError, match="cluster has 1 broker"):
        resolve_replication(Settings(topic_replication_factor="3"), 1)
    with pytest.raises(ConfigError, match="above the replication factor 3"):
        resolve_replication(Settings(topic_min_insync_replicas="4"), 3)
    with pytest.raises(ConfigError, match="expected auto or a number"):
        resolve_replication(Settings(topic_replication_factor="three"), 3)
    with pytest.raises(ConfigError, match="at least 1"):
        resolve_replication(Settings(topic_min_insync_replicas="0"), 3)


def test_topic_problems() -> None:
    wanted = {"registry": {"cleanup.policy": "compact"}, "activities": {}}
    states = [
        TopicState("registry", 3, {"cleanup.policy": "compact,delete",
                                   "min.insync.replicas": "2"}),
        TopicState("activities", 1, {"cleanup.policy": "delete", "min.insync.replicas": "1"}),
        TopicState("unrelated", 1, {}),
    ]
    assert topic_problems(wanted, states, Replication(3, 2)) == [
        "topic activities: replication factor 1 < 3",
        "topic activities: min.insync.replicas 1 < 2",
    ]
    bad = [TopicState("registry", 3, {"cleanup.policy": "delete"})]
    assert topic_problems(wanted, bad, Replication(1, 1)) == [
        "topic registry: cleanup.policy delete, needs compact"]
    assert topic_problems(wanted, states[:1], Replication(3, 2)) == []


def test_acls_name_the_services_real_groups_and_topics() -> None:
    from switchboard.acls import Acl, required_acls
    from switchboard.services import deliverer, router

    s = Settings(topic_prefix="prod.")
    assert Acl("group", "prod." + router.GROUP, "Read") in required_acls(s, "router")
    assert Acl("group", "prod." + deliverer.GROUP, "Read") in required_acls(s, "deliverer")
    stream = required_acls(s, "stream")
    assert not [a for a in stream if a.resource == "group"]
    assert {a.name for a in stream if a.operation == "Write"} == {"prod.stream-cursors"}
    # Only the API and the deliverer (disabling a failing destination) write the registry.
    writers = {svc for svc in ("api", "ingress", "stream", "router", "deliverer")
               if Acl("topic", "prod.registry", "Write") in required_acls(s, svc)}
    assert writers == {"api", "deliverer"}
    assert all(a.name.startswith("prod.") for svc in ("api", "router")
               for a in required_acls(s, svc))
    with pytest.raises(ValueError, match="unknown service"):
        required_acls(s, "worker")


def test_parked_lanes_must_never_expire() -> None:
    wanted = {"deliveries.parked": {"retention.ms": "-1"}, "deliveries": {"retention.ms": "1"}}
    states = [TopicState("deliveries.parked", 1, {"retention.ms": "604800000"}),
              TopicState("deliveries", 1, {"retention.ms": "604800000"})]
    assert topic_problems(wanted, states, Replication(1, 1)) == [
        "topic deliveries.parked: retention.ms 604800000, needs -1"]
    ok = [TopicState("deliveries.parked", 1, {"retention.ms": "-1"})]
    assert topic_problems(wanted, ok, Replication(1, 1)) == []


def test_syncros_budget_needs_the_brokers_clock() -> None:
    from switchboard.kafka import SYNCRO_SLOTS
    from switchboard.kafka_topics import topic_specs

    s = Settings(topic_prefix="p.")
    [slots] = [t for t in topic_specs(s) if t.name == s.topic(SYNCRO_SLOTS)]
    assert slots.config["message.timestamp.type"] == "LogAppendTime"
    assert int(slots.config["retention.ms"]) >= 3600 * 1000
    wanted = {slots.name: slots.config}
    stale = [TopicState(slots.name, 1, {"message.timestamp.type": "CreateTime"})]
    assert topic_problems(wanted, stale, Replication(1, 1)) == [
        "topic p.syncro.slots: message.timestamp.type CreateTime, needs LogAppendTime"]
    ok = [TopicState(slots.name, 1, {"message.timestamp.type": "LogAppendTime"})]
    assert topic_problems(wanted, ok, Replication(1, 1)) == []


def test_sync_runs_is_a_table_whose_runs_expire() -> None:
    from switchboard.kafka import JOBS, SYNC_RUNS
    from switchboard.kafka_topics import topic_specs

    s = Settings.from_env({"SWITCHBOARD_SYNC_RUNS_RETENTION_DAYS": "7",
                           "SWITCHBOARD_TOPIC_PREFIX": "p."})
    specs = {t.name: t for t in topic_specs(s)}
    runs, jobs = specs["p." + SYNC_RUNS], specs["p." + JOBS]
    assert runs.partitions == jobs.partitions == 1
    assert runs.config == {**jobs.config, "cleanup.policy": "compact,delete",
                           "retention.ms": str(7 * 24 * 3600 * 1000)}
    default = {t.name: t for t in topic_specs(Settings(topic_prefix="p."))}
    assert default["p." + SYNC_RUNS].config["retention.ms"] == str(30 * 24 * 3600 * 1000)
    # Compaction is what the check needs of it; compacted only keeps more, not less.
    wanted = {"sync.runs": runs.config}
    for have in ("compact", "compact,delete", "delete,compact"):
        ok = [TopicState("sync.runs", 1, {"cleanup.policy": have})]
        assert topic_problems(wanted, ok, Replication(1, 1)) == []
    bad = [TopicState("sync.runs", 1, {"cleanup.policy": "delete"})]
    assert topic_problems(wanted, bad, Replication(1, 1)) == [
        "topic sync.runs: cleanup.policy delete, needs compact"]
