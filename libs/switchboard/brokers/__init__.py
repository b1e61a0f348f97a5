"""Development brokers: Tansu (embedded, in-memory) and Apache Kafka (real, on disk).

Both run as local subprocesses on loopback ports and share one small synchronous
surface (:class:`Broker`), so the CLI and pytest fixtures can use either.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from switchboard.brokers.kafka import KafkaBroker
    from switchboard.brokers.tansu import TansuBroker

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerKind",
    "KafkaBroker",
    "TansuBroker",
    "free_port",
    "port_accepts",
    "start_broker",
]

BrokerKind = Literal["tansu", "kafka"]

LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    """A development broker could not be fetched, started or stopped."""


@runtime_checkable
class Broker(Protocol):
    """What every development broker offers."""

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        ...

    @property
    def kind(self) -> BrokerKind:
        """Which broker this is."""
        ...

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM, then SIGKILL after a grace period)."""
        ...

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would."""
        ...


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.25) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_broker(
    kind: BrokerKind, data_dir: Path | None = None, *, port: int | None = None
) -> TansuBroker | KafkaBroker:
    """Start a development broker of ``kind`` and wait until it serves.

    For Kafka, ``data_dir`` holds the log and KRaft metadata and survives restarts;
    without one a fresh temporary directory is used. For Tansu (memory only) it
    only receives the broker's log file.
    """
    if kind == "tansu":
        from switchboard.brokers.tansu import TansuBroker

        log_path = data_dir / "tansu.log" if data_dir is not None else None
        return TansuBroker.start(port=port, log_path=log_path)
    if kind == "kafka":
        from switchboard.brokers.kafka import KafkaBroker

        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="switchboard-kafka-"))
        return KafkaBroker.start(data_dir, port=port)
    raise ValueError(f"unknown broker kind {kind!r}; expected 'tansu' or 'kafka'")


def __getattr__(name: str) -> object:
    # Lazy re-exports: the submodules import helpers from this package, so importing
    # them eagerly here would be circular (and would make `import switchboard.brokers`
    # pay for both).
    if name == "TansuBroker":
        from switchboard.brokers.tansu import TansuBroker

        return TansuBroker
    if name == "KafkaBroker":
        from switchboard.brokers.kafka import KafkaBroker

        return KafkaBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- process plumbing shared by both brokers (private) ---------------------------------


def _ensure_port_free(port: int, what: str) -> None:
    # A broker that cannot bind may still leave the port "accepting" (someone else's
    # listener), which would make the readiness wait succeed against the wrong server.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the brokers themselves use it: TIME_WAIT leftovers of a
        # previous run on this port (a restart) are fine, a live listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise BrokerError(f"{what}: port {LOOPBACK}:{port} is already in use") from exc


def _log_tail(path: Path, max_lines: int = 40, max_bytes: int = 16_384) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])


def _wait_ready(
    proc: subprocess.Popen[bytes],
    *,
    what: str,
    log_path: Path,
    timeout: float,
    ready: Callable[[], bool],
) -> None:
    """Poll ``ready`` until it holds; fail fast with the log tail if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise BrokerError(
                f"{what} exited with code {code} during startup; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        if ready():
            # Re-check: a process that failed to bind can die right after a foreign
            # listener answered our probe.
            if proc.poll() is None:
                return
            continue
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"{what} not ready after {timeout:.0f} s; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.05)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill(proc)
    _forget(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    proc.wait()
    _forget(proc)


# Brokers still running when the interpreter exits (a test run that crashed, a CLI that
# forgot) are stopped here so they do not outlive their owner holding ports.
_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


def _track(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live.add(proc)


def _forget(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live.discard(proc)


@atexit.register
def _stop_leftovers() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _terminate(proc, grace=10.0)
