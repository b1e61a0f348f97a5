"""`<data-dir>/dev.json`: where a running `switchboard dev` is, and what a new one makes
of a file left behind (decisions only; the CLI does the I/O).

The format is read by other commands (`switchboard tail`, `doctor`) to find the broker::

    {"pid": 123, "url": "http://127.0.0.1:8080", "bootstrap": "127.0.0.1:9092",
     "broker": "tansu", "brokerPid": 124}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec
from msgspec import Struct

FILE_NAME = "dev.json"


class DevState(Struct, rename="camel"):
    pid: int
    url: str
    bootstrap: str
    broker: Literal["tansu", "kafka"]
    broker_pid: int | None  # None: an external broker (KAFKA_BOOTSTRAP_SERVERS)


def encode(state: DevState) -> bytes:
    """The file's bytes."""
    return msgspec.json.encode(state)


def decode(raw: bytes) -> DevState | None:
    """The state in a dev.json, or None if it is unreadable (then it says nothing)."""
    try:
        return msgspec.json.decode(raw, type=DevState)
    except msgspec.DecodeError:
        return None


def looks_like_broker(cmdline: list[str], kind: str) -> bool:
    """Whether a process's command line is a broker of `kind` as dev starts it (so a pid
    reused by an unrelated process is never taken for one)."""
    if kind == "kafka":
        return "kafka.Kafka" in cmdline
    return bool(cmdline) and cmdline[0].endswith("tansu") and "broker" in cmdline[1:2]


def leftover_problem(state: DevState | None, own_pid: int, alive: Callable[[int], bool],
                     is_broker: Callable[[int, str], bool], data_dir: str) -> str | None:
    """What stands in the way of a new dev on this data dir, as one line with the fix;
    None when nothing does (no file, or one whose processes are gone)."""
    if state is None:
        return None
    if state.pid != own_pid and alive(state.pid):
        return (f"another `switchboard dev` (pid {state.pid}) is running on {data_dir} at "
                f"{state.url}: stop it (kill {state.pid}), pass --replace to stop it, or use "
                "another --data-dir")
    if state.broker_pid is not None and alive(state.broker_pid) and is_broker(
            state.broker_pid, state.broker):
        return (f"a previous `switchboard dev` left its {state.broker} broker running "
                f"(pid {state.broker_pid}, {state.bootstrap}): stop it with "
                f"`kill {state.broker_pid}`, or start with --replace")
    return None
