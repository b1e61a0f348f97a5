"""Apache Kafka 4.x as a single-node KRaft broker (broker + controller in one JVM).

The jars come from Maven Central through ``tools/kafka/pom.xml`` and are cached per
version (see `switchboard.brokers.kafka_jars`); data lives in a caller-chosen directory
and survives restarts.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from switchboard.brokers import (
    LOOPBACK,
    BrokerError,
    _ensure_port_free,
    _kill,
    _terminate,
    _track,
    _wait_ready,
    free_port,
)
from switchboard.brokers.kafka_jars import ensure_kafka_jars
from switchboard.brokers.kafka_wire import metadata_ready

__all__ = [
    "KafkaBroker",
    "SecureListener",
]

_NODE_ID: Final = 1
_FORMAT_TIMEOUT_S: Final = 120.0


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one starting with "-": the storage tool would read it as an option (1 in 64).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class SecureListener:
    """A second client listener with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and/or TLS.

    The PLAINTEXT listener stays (the controller, the readiness probe and inter-broker
    traffic use it); clients that should authenticate use ``port``. ``users`` get a SCRAM
    credential of each mechanism (written when the storage is formatted, so only on first
    start) and a PLAIN entry. ``keystore`` is a PEM file holding the server's PKCS#8 private
    key and certificate chain (needed for SSL and SASL_SSL); with ``truststore`` (a PEM CA)
    the listener also asks clients for a certificate signed by it.

    With ``authorize`` the broker enforces ACLs (StandardAuthorizer, deny when no ACL
    matches); ``super_users`` (e.g. ``"admin"``) may do anything, as may the PLAINTEXT
    listener's anonymous principal, which the broker itself uses.
    """

    protocol: Literal["SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    port: int
    users: Mapping[str, str] = field(default_factory=dict)
    keystore: Path | None = None
    truststore: Path | None = None
    authorize: bool = False
    super_users: tuple[str, ...] = ()


_SECURE: Final = "SECURE"


class KafkaBroker:
    """A single-node KRaft Kafka on loopback ports; start it with :meth:`start`."""

    kind: Final[Literal["kafka"]] = "kafka"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        libs_dir: Path,
        *,
        heap: str = "512m",
        secure: SecureListener | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port
        self.libs_dir = libs_dir
        self.heap = heap
        self.secure = secure
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        data_dir: Path,
        port: int | None = None,
        *,
        controller_port: int | None = None,
        libs_dir: Path | None = None,
        timeout: float = 60.0,
        secure: SecureListener | None = None,
    ) -> KafkaBroker:
        """Start Kafka with its data in ``data_dir``; format storage only on first use.

        Fetches the jars first if needed (see :func:`ensure_kafka_jars`). Returns once
        the broker answers metadata requests.
        """
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if libs_dir is None:
            libs_dir = ensure_kafka_jars()
        broker_port = port if port is not None else free_port()
        if controller_port is None:
            controller_port = free_port()
            while controller_port == broker_port:
                controller_port = free_port()
        broker = cls(data_dir, broker_port, controller_port, libs_dir, secure=secure)
        broker._launch(timeout)
        return broker

    # -- paths ---------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """The broker's own log (stdout and stderr of the JVM)."""
        return self.data_dir / "kafka.log"

    @property
    def config_path(self) -> Path:
        """The generated ``server.properties``."""
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        """Kafka's ``log.dirs``: partition data and the KRaft metadata log."""
        return self.data_dir / "kraft-logs"

    @property
    def _cluster_id_path(self) -> Path:
        return self.data_dir / "cluster.id"

    @property
    def _log4j_path(self) -> Path:
        return self.data_dir / "log4j2.properties"

    # -- lifecycle -----------------------------------------------------------------------

    def _launch(self, timeout: float) -> None:
        _ensure_port_free(self.port, "kafka broker listener")
        _ensure_port_free(self.controller_port, "kafka controller listener")
        if self.secure is not None:
            _ensure_port_free(self.secure.port, "kafka secure listener")
        self._write_config()
        self._format_if_needed()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
            )
        _track(self.process)
        try:
            _wait_ready(
                self.process,
                what=f"kafka on {self.bootstrap}",
                log_path=self.log_path,
                timeout=timeout,
                ready=lambda: metadata_ready(self.port),
            )
        except BaseException:
            _kill(self.process)
            raise

    def _java(self) -> list[str]:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if java is None:
            raise BrokerError("Java 17+ is needed to run Kafka but `java` is not on PATH")
        return [
            java,
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j_path}",
            "-cp",
            f"{self.libs_dir}/*",  # the JVM expands this wildcard itself; no shell involved
        ]

    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            # Static quorum (not --standalone): the controller's address is read from
            # this file on every start rather than stored in the metadata log, so a
            # later start on other ports still finds its own quorum.
            "controller.quorum.voters": f"{_NODE_ID}@{LOOPBACK}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            # Single node: every internal topic must fit on one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Fewer internal partitions: creating 50 of them on the first group join
            # costs seconds on a small machine and buys nothing on one node.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            # After a SIGKILL the controller (same JVM, restarted) still holds the old
            # broker registration and refuses the new one until this session expires:
            # 9 s by default, which every crash-recovery test would pay.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
            # Groups form at once instead of after the default 3 s grace.
            "group.initial.rebalance.delay.ms": "0",
            # Compaction that tests can observe within seconds.
            "log.cleaner.enable": "true",
            "log.cleaner.backoff.ms": "1000",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),  # fits -Xmx512m
            "log.segment.delete.delay.ms": "1000",
            "log.retention.check.interval.ms": "5000",
        }
        if self.secure is not None:
            props.update(self._secure_props(self.secure))
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        self.config_path.write_text("# Generated by switchboard.brokers.kafka\n" + text)
        self._log4j_path.write_text(_LOG4J2_PROPERTIES)

    def _secure_props(self, secure: SecureListener) -> dict[str, str]:
        prefix = f"listener.name.{_SECURE.lower()}"
        url = f"{_SECURE}://{LOOPBACK}:{secure.port}"
        props = {
            "listeners": (f"PLAINTEXT://{LOOPBACK}:{self.port},{url},"
                          f"CONTROLLER://{LOOPBACK}:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},{url}",
            "listener.security.protocol.map": (
                f"CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,{_SECURE}:{secure.protocol}"),
        }
        if secure.protocol.startswith("SASL_"):
            plain_users = "".join(
                f' user_{name}="{password}"' for name, password in secure.users.items())
            props |= {
                f"{prefix}.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                f"{prefix}.plain.sasl.jaas.config": (
                    "org.apache.kafka.common.security.plain.PlainLoginModule required"
                    f"{plain_users};"),
                f"{prefix}.scram-sha-256.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"),
                f"{prefix}.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"),
            }
        if secure.keystore is not None:
            props |= {f"{prefix}.ssl.keystore.type": "PEM",
                      f"{prefix}.ssl.keystore.location": str(secure.keystore)}
        if secure.truststore is not None:
            props |= {f"{prefix}.ssl.truststore.type": "PEM",
                      f"{prefix}.ssl.truststore.location": str(secure.truststore),
                      f"{prefix}.ssl.client.auth": "required"}
        if secure.authorize:
            supers = ";".join(["User:ANONYMOUS", *(f"User:{u}" for u in secure.super_users)])
            props |= {
                "authorizer.class.name":
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found": "false",
                "super.users": supers,
            }
        return props

    def _format_if_needed(self) -> None:
        # meta.properties is what Kafka itself checks; formatting again would wipe
        # nothing but fail, and a new cluster id would orphan the existing data.
        if (self.log_dirs / "meta.properties").is_file():
            return
        if self._cluster_id_path.is_file():
            cluster_id = self._cluster_id_path.read_text().strip()
        else:
            cluster_id = new_cluster_id()
            self._cluster_id_path.write_text(cluster_id + "\n")
        cmd = [
            *self._java(),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config_path),
        ]
        if self.secure is not None and self.secure.protocol.startswith("SASL_"):
            for name, password in self.secure.users.items():
                for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                    cmd += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
                cwd=self.data_dir,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting KRaft storage in {self.log_dirs} timed out") from exc
        if result.returncode != 0:
            raise BrokerError(
                f"formatting KRaft storage in {self.log_dirs} failed "
                f"(exit {result.returncode}):\n{result.stdout}\n{result.stderr}".rstrip()
            )

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:port`` for ``bootstrap_servers``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """``127.0.0.1:port`` of the secure listener (see :class:`SecureListener`)."""
        if self.secure is None:
            raise BrokerError("this broker was started without a secure listener")
        return f"{LOOPBACK}:{self.secure.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running JVM, if any."""
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """True while the broker JVM is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL after ``grace`` seconds. Idempotent."""
        if self.process is not None:
            _terminate(self.process, grace)

    def kill(self) -> None:
        """SIGKILL now, as a crash would; the next start recovers the logs. Idempotent."""
        if self.process is not None:
            _kill(self.process)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop, then start again on the same ports and data directory."""
        self.stop()
        self._launch(timeout)

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, data_dir='{self.data_dir}', {state})"


# Plain-text log to stdout (which is the log file). Properties format needs no extra
# jar, unlike the YAML config Kafka's own distribution ships. Log4j's own shutdown
# hook would stop logging while Kafka's shutdown hook is still running, hiding how a
# shutdown ended, so it is disabled.
_LOG4J2_PROPERTIES: Final = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""
