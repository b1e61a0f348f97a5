"""How the hub talks to Kafka securely and what it expects of its topics.

The pure core: the keyword arguments of every aiokafka client (`client_kwargs`), the
replication a deployment asks for (`resolve_replication`) and what is wrong with topics
that already exist (`topic_problems`). The small I/O shell below them builds the TLS
context from files (`ssl_context`) and checks the credentials once at start
(`check_broker_access`), so a wrong password stops the process with a clear error instead
of being retried as "broker not ready" forever.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Iterable, Mapping
from typing import Final

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from msgspec import Struct

from switchboard.errors import ConfigError
from switchboard.settings import Settings

log = logging.getLogger(__name__)

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TOPIC_CHECKS: Final = ("refuse", "warn")

# --- client settings (pure) -------------------------------------------------------------


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def security_problems(settings: Settings) -> list[str]:
    """Every inconsistency in the Kafka security settings, worded for the operator.

    Credentials or TLS files given for a protocol that would not use them are refused
    rather than silently ignored: a typo in the protocol must not send traffic in clear.
    """
    problems: list[str] = []
    protocol = settings.kafka_security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        return [f"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of "
                + ", ".join(SECURITY_PROTOCOLS)]
    if settings.topic_check not in TOPIC_CHECKS:
        problems.append(f"SWITCHBOARD_TOPIC_CHECK={settings.topic_check!r}: expected "
                        "refuse or warn")
    sasl_given = [name for name, value in (
        ("SWITCHBOARD_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
        ("SWITCHBOARD_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password)) if value]
    tls_given = [name for name, value in (
        ("SWITCHBOARD_KAFKA_SSL_CA_FILE", settings.kafka_ssl_ca_file),
        ("SWITCHBOARD_KAFKA_SSL_CERT_FILE", settings.kafka_ssl_cert_file),
        ("SWITCHBOARD_KAFKA_SSL_KEY_FILE", settings.kafka_ssl_key_file)) if value]
    if uses_sasl(settings):
        if settings.kafka_sasl_mechanism not in SASL_MECHANISMS:
            problems.append(f"SWITCHBOARD_KAFKA_SASL_MECHANISM="
                            f"{settings.kafka_sasl_mechanism!r}: expected one of "
                            + ", ".join(SASL_MECHANISMS))
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            problems.append(f"{protocol} needs SWITCHBOARD_KAFKA_SASL_USERNAME and "
                            "SWITCHBOARD_KAFKA_SASL_PASSWORD")
    elif sasl_given:
        problems.append(f"{' and '.join(sasl_given)} set but "
                        f"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL is {protocol}: use "
                        "SASL_SSL (or SASL_PLAINTEXT) or remove them")
    if uses_tls(settings):
        if bool(settings.kafka_ssl_cert_file) != bool(settings.kafka_ssl_key_file):
            problems.append("SWITCHBOARD_KAFKA_SSL_CERT_FILE and SWITCHBOARD_KAFKA_SSL_KEY_FILE "
                            "go together (a client certificate and its key)")
    elif tls_given:
        problems.append(f"{' and '.join(tls_given)} set but "
                        f"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL is {protocol}: use SSL or "
                        "SASL_SSL or remove them")
    return problems


def client_kwargs(settings: Settings, tls: ssl.SSLContext | None = None) -> dict[str, object]:
    """The connection keyword arguments of every aiokafka client the hub creates
    (producers, consumers, admin): bootstrap servers, security protocol, TLS, SASL.

    Pure: the TLS context is built by the caller (`ssl_context`) because that reads files.
    Raises ConfigError when the settings are inconsistent.
    """
    problems = security_problems(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    kwargs: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if uses_tls(settings):
        if tls is None:
            raise ConfigError(f"{settings.kafka_security_protocol} needs a TLS context")
        kwargs["ssl_context"] = tls
    if uses_sasl(settings):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password
    return kwargs


# --- replication and topic checks (pure) -------------------------------------------------


class Replication(Struct, frozen=True):
    factor: int
    min_insync: int


def resolve_replication(settings: Settings, broker_count: int) -> Replication:
    """The replication factor and `min.insync.replicas` for the topics the hub creates.

    `auto` means 3 / 2 on a cluster of three or more brokers and what fits otherwise
    (1 / 1 on a single broker, 2 / 1 on two); `min.insync.replicas` `auto` is 2 from a
    factor of 3, else 1. An explicit factor larger than the cluster is refused.
    """
    brokers = max(1, broker_count)
    factor = _positive("SWITCHBOARD_TOPIC_REPLICATION_FACTOR",
                       settings.topic_replication_factor, min(3, brokers))
    min_insync = _positive("SWITCHBOARD_TOPIC_MIN_INSYNC_REPLICAS",
                           settings.topic_min_insync_replicas, 2 if factor >= 3 else 1)
    if factor > brokers:
        raise ConfigError(f"SWITCHBOARD_TOPIC_REPLICATION_FACTOR={factor} but the cluster "
                          f"has {broker_count} broker(s)")
    if min_insync > factor:
        raise ConfigError(f"SWITCHBOARD_TOPIC_MIN_INSYNC_REPLICAS={min_insync} is above the "
                          f"replication factor {factor}: no write could ever succeed")
    return Replication(factor, min_insync)


def _positive(name: str, raw: str, auto: int) -> int:
    text = raw.strip().lower()
    if text in ("", "auto"):
        return auto
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected auto or a number") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r}: must be at least 1")
    return value


class TopicState(Struct, frozen=True):
    """What the cluster says about one existing topic."""

    name: str
    replication_factor: int  # the smallest over its partitions
    configs: dict[str, str]  # effective values (topic overrides and broker defaults)


def topic_problems(wanted: Mapping[str, Mapping[str, str]], states: Iterable[TopicState],
                   replication: Replication) -> list[str]:
    """Why existing topics are not what the hub would have created.

    `wanted` maps each topic name to the configs the hub sets on it. A lower replication
    factor or `min.insync.replicas` than asked for makes "acknowledged" weaker than the
    deployment promises; a table topic that is not compacted loses hubs at retention.
    """
    problems: list[str] = []
    for state in states:
        want = wanted.get(state.name)
        if want is None:
            continue
        if state.replication_factor < replication.factor:
            problems.append(f"topic {state.name}: replication factor "
                            f"{state.replication_factor} < {replication.factor}")
        isr = state.configs.get("min.insync.replicas")
        if isr is not None and isr.isdigit() and int(isr) < replication.min_insync:
            problems.append(f"topic {state.name}: min.insync.replicas {isr} < "
                            f"{replication.min_insync}")
        policy = want.get("cleanup.policy")
        have = state.configs.get("cleanup.policy")
        # `compact,delete` (sync.runs) needs compaction; its retention is a bound, not a
        # promise, so a table compacted only keeps more, not less.
        need = "compact" if policy is not None and "compact" in policy.split(",") else policy
        if need is not None and have is not None and need not in have.split(","):
            problems.append(f"topic {state.name}: cleanup.policy {have}, needs {need}")
        # Parked lanes wait as long as their destination is disabled: a finite retention
        # would drop held deliveries.
        retention = state.configs.get("retention.ms")
        if want.get("retention.ms") == "-1" and retention not in (None, "-1"):
            problems.append(f"topic {state.name}: retention.ms {retention}, needs -1")
        # Syncro's budget compares timestamps written by many hosts: one clock, the broker's.
        stamp = want.get("message.timestamp.type")
        have_stamp = state.configs.get("message.timestamp.type")
        if stamp is not None and have_stamp is not None and have_stamp != stamp:
            problems.append(f"topic {state.name}: message.timestamp.type {have_stamp}, "
                            f"needs {stamp}")
    return problems


# --- I/O shell ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _tls_context(ca_file: str, cert_file: str, key_file: str, key_password: str,
                 check_hostname: bool) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
        ctx.check_hostname = check_hostname
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file, password=key_password or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"Kafka TLS files: {exc}") from None
    return ctx


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every Kafka connection of this process (None without TLS).

    Verifies the broker's certificate against `SWITCHBOARD_KAFKA_SSL_CA_FILE` (the system's
    trust store when empty) and its host name; presents a client certificate when one is
    set. Built once per process and shared by every client.
    """
    if not uses_tls(settings):
        return None
    return _tls_context(settings.kafka_ssl_ca_file, settings.kafka_ssl_cert_file,
                        settings.kafka_ssl_key_file, settings.kafka_ssl_key_password,
                        settings.kafka_ssl_check_hostname)


def kafka_kwargs(settings: Settings) -> dict[str, object]:
    """`client_kwargs` with this process's TLS context."""
    problems = security_problems(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    return client_kwargs(settings, ssl_context(settings))


_AUTH_ERRORS = (SaslAuthenticationFailed, AuthenticationFailedError,
                AuthenticationMethodNotSupported, UnsupportedSaslMechanismError,
                IllegalSaslStateError)
# A TLS failure that a broker going down mid-handshake also causes: retried, not fatal.
_TLS_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError)


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS: {item.strip()!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    return out


async def check_broker_access(settings: Settings, timeout_s: float = 10.0) -> None:
    """Connect to a bootstrap server once, with TLS and SASL as configured.

    Refused credentials, an untrusted certificate or a TLS mismatch raise ConfigError (the
    process must not start); an unreachable broker raises KafkaConnectionError (retried).
    """
    kwargs = kafka_kwargs(settings)
    del kwargs["bootstrap_servers"]
    who = (f"user {settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism})"
           if uses_sasl(settings) else settings.kafka_security_protocol)
    failures: list[str] = []
    for host, port in _hosts(settings.kafka_bootstrap_servers):
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(host, port, client_id="switchboard-check",
                                         request_timeout_ms=int(timeout_s * 1000), **kwargs)
        except _AUTH_ERRORS as exc:
            raise ConfigError(f"Kafka at {host}:{port} refused {who}: "
                              f"{exc.__class__.__name__}: {exc}") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(f"Kafka at {host}:{port}: its TLS certificate is not trusted "
                              f"({exc.verify_message}); set SWITCHBOARD_KAFKA_SSL_CA_FILE to "
                              "the CA that signed it") from None
        except ssl.SSLError as exc:
            if isinstance(exc, _TLS_TRANSIENT):
                failures.append(f"{host}:{port}: {exc}")
                continue
            raise ConfigError(f"Kafka at {host}:{port}: TLS failed ({exc.reason or exc}); "
                              "is SWITCHBOARD_KAFKA_SECURITY_PROTOCOL right for this "
                              "listener?") from None
        except (OSError, TimeoutError, KafkaError) as exc:
            failures.append(f"{host}:{port}: {exc.__class__.__name__}: {exc}")
            continue
        conn.close()
        return
    hint = ""
    if uses_tls(settings) and not settings.kafka_ssl_cert_file:
        # TLS 1.3 reports a missing client certificate only by closing the connection.
        hint = (" (if the listener requires a client certificate, set "
                "SWITCHBOARD_KAFKA_SSL_CERT_FILE and SWITCHBOARD_KAFKA_SSL_KEY_FILE)")
    raise KafkaConnectionError("no bootstrap server reachable: " + "; ".join(failures) + hint)
