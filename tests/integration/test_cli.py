"""`switchboard dev` as a user runs it: one process, embedded broker, hub.yaml, clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from switchboard.brokers import free_port, port_accepts

HUB_YAML = """
hubs:
  - name: demo
    integrations:
      - name: desk
        channelId: Direct
        configuration: {integrationType: Agent}
      - name: audit
        channelId: 3
        configuration: {webhookUrl: "http://127.0.0.1:9/x", events: ["message:*"]}
"""


def test_dev_runs_everything_applies_config_and_stops_cleanly(tmp_path: Path) -> None:
    (tmp_path / "hub.yaml").write_text(HUB_YAML)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["SWITCHBOARD_ADMIN_TOKEN"] = "dev-admin"
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard.services.cli", "dev", "--port", str(port),
         "--data-dir", str(tmp_path / "var"), "--config", str(tmp_path / "hub.yaml")],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    admin = {"Authorization": "Bearer dev-admin"}
    try:
        deadline = time.monotonic() + 60
        hubs: list[dict[str, str]] = []
        while time.monotonic() < deadline and not hubs:
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    hubs = httpx.get(f"{base}/api/v1/hubs", headers=admin).json()
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert [h["name"] for h in hubs] == ["demo"]
        integrations = httpx.get(f"{base}/api/v1/integrations/hubs/{hubs[0]['hubId']}",
                                 headers=admin).json()
        assert sorted(i["name"] for i in integrations) == ["audit", "desk"]
        assert httpx.get(f"{base}/docs").status_code == 200
        out = (tmp_path / "dev.log").read_text()
        assert "privateSigningKey=whsk_" in out  # shown once, at creation
        # An admin token the operator supplied is never echoed (only a generated one is).
        assert "dev-admin" not in out and "from SWITCHBOARD_ADMIN_TOKEN" in out
        broker_port = int(re.search(r"broker\s+127\.0\.0\.1:(\d+) \(tansu\)", out).group(1))
        assert port_accepts(broker_port)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for _ in range(50):
            if not port_accepts(broker_port):
                break
            time.sleep(0.1)
        assert not port_accepts(broker_port), "the embedded broker outlived switchboard dev"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
