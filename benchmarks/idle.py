"""What `switchboard dev` costs when nothing happens.

Starts `switchboard dev` (every service and the embedded broker) on a free port with a
hub, a Direct Customer and a Direct Agent integration (so every consumer has something
to watch), lets it settle, then reads the CPU time of the dev process and of its broker
from /proc over `--seconds`. Target: the whole tree ≤ 2 % of one core.

    .venv/bin/python benchmarks/idle.py [--seconds 20] [--settle 10] [--broker tansu]

Another commit's code (same run, alternated: the machine is shared): a worktree of it and
`PYTHONPATH=<worktree>/libs:<worktree>/services` (the hub inherits it and finds that
code first); `benchmarks/README.md` has the commands.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from _common import child_env, cpu_seconds, machine_note
from switchboard.brokers import free_port


def children(pid: int) -> list[int]:
    """Direct children of `pid` (the embedded broker is one)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    args = parser.parse_args(argv)

    port = free_port()
    admin = "idle-admin-" + uuid.uuid4().hex
    data = tempfile.mkdtemp(prefix="switchboard-idle-")
    exe = str(Path(sys.executable).with_name("switchboard"))
    fd, log_name = tempfile.mkstemp(prefix="switchboard-idle-", suffix=".log")
    with os.fdopen(fd, "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [exe, "dev", "--port", str(port), "--broker", args.broker, "--data-dir", data],
            env=child_env({"SWITCHBOARD_ADMIN_TOKEN": admin}), stdout=log, stderr=log,
            stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dev did not start; log: {log_name}")
            time.sleep(0.5)
        auth = {"Authorization": f"Bearer {admin}"}
        hub = httpx.post(base + "/api/v1/hubs", json={"name": "idle"}, headers=auth).json()
        token = {"Authorization": f"Bearer {hub['accessToken']}"}
        for name, kind in (("site", "Customer"), ("desk", "Agent")):
            r = httpx.post(f"{base}/api/v1/integrations/hubs/{hub['hubId']}", headers=token,
                           json={"channelId": "Direct", "name": name, "configuration": {
                               "integrationType": kind,
                               "webhookUrl": f"http://127.0.0.1:9/{name}"}})
            r.raise_for_status()
        time.sleep(args.settle)
        pids = {"switchboard": proc.pid, **{f"broker (pid {c})": c for c in children(proc.pid)}}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - t0
        shares = {k: 100 * (cpu_seconds(p) - before[k]) / wall for k, p in pids.items()}
        print(f"switchboard dev ({args.broker}) idle for {args.seconds:g} s after "
              f"{args.settle:g} s to settle, % of one core:")
        for k, v in shares.items():
            print(f"  {k:24} {v:6.2f}")
        total = sum(shares.values())
        print(f"  {'whole tree':24} {total:6.2f}   (target <= 2.00)")
        print(f"machine: {machine_note()}")
        return 0 if total <= 2.0 else 1
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(log_name)


if __name__ == "__main__":
    sys.exit(main())
