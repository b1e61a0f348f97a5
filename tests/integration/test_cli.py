"""`switchboard dev` as a user runs it: one process, embedded broker, hub.yaml, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from switchboard.brokers import free_port, port_accepts
from switchboard.keys import generate_signing_keypair
from tests.conftest import RunningHub
from tests.support import sign_with_cryptography

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


def _start(args: list[str], log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "switchboard.services.cli", *args],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


async def _wait_for_text(log: Path, proc: subprocess.Popen[bytes], *texts: str,
                         timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = await asyncio.to_thread(log.read_text)
        if all(t in out for t in texts):
            return out
        assert proc.poll() is None, out
        assert time.monotonic() < deadline, f"waited for {texts} in:\n{out}"
        await asyncio.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=10) == 0  # Ctrl-C is how a receiver stops
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _deliveries(out: str, path: str) -> list[tuple[str, list[str], str]]:
    """(verdict, header lines, body) of each delivery `receive` printed at `path`."""
    found = []
    for block in out.split("\nPOST ")[1:]:
        head, *rest = block.splitlines()
        if head.split()[0] == path:
            headers = [line.strip() for line in rest if line.startswith("  ")]
            body = next(line for line in rest if line.startswith("{"))
            found.append((head.split("[", 1)[1].rstrip("]"), headers, body))
    return found


async def test_receive_verifies_every_destination_of_the_walk_through(
        hub: RunningHub, tmp_path: Path) -> None:
    """The README's five minutes: receive started first (keys looked up at the hub by
    webhook path as integrations appear), then a signed customer message and the agent's
    answer, delivered to three paths of one receiver."""
    port = free_port()
    at = f"http://127.0.0.1:{port}"
    looked_up = _start(["receive", "--port", str(port), "--url", hub.base_url],
                       tmp_path / "receive.log",
                       {"SWITCHBOARD_TOKEN": hub.settings.admin_token})
    try:
        await _wait_for_text(tmp_path / "receive.log", looked_up, "receiving webhooks on")
        hub_id, auth = await hub.create_hub()
        website = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="website",
            configuration={"integrationType": "Customer", "webhookUrl": f"{at}/customer"})
        desk = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": f"{at}/agent"})
        await hub.create_integration(
            hub_id, auth, channelId="System", name="audit",
            configuration={"webhookUrl": f"{at}/audit", "events": ["message:*"]})
        sent = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "switchboard.services.cli", "send",
            website["integrationId"], "--key", website["configuration"]["privateSigningKey"],
            "--text", "Hi, my order is late", "--url", hub.base_url],
            capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0 and sent.stdout.startswith("202 "), sent
        out = await _wait_for_text(tmp_path / "receive.log", looked_up, "POST /agent ",
                                   "POST /audit ")
        [(verdict, headers, body)] = _deliveries(out, "/agent")
        assert verdict == "signature OK"
        assert any(h.startswith("webhook-id: ") for h in headers)
        assert any(h.startswith("webhook-timestamp: ") for h in headers)
        assert any(h.startswith("webhook-signature: v1a,") for h in headers)
        assert "Hi, my order is late" in body
        assert [d[0] for d in _deliveries(out, "/audit")] == ["signature OK"]
        conversation = json.loads(body)["conversationId"]

        answered = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "switchboard.services.cli", "send", desk["integrationId"],
            "--key", desk["configuration"]["privateSigningKey"], "--conversation",
            conversation, "--text", "Sorry! It ships today.", "--url", hub.base_url],
            capture_output=True, text=True, timeout=60)
        assert answered.returncode == 0, answered
        out = await _wait_for_text(tmp_path / "receive.log", looked_up, "POST /customer ")
        [(verdict, _, body)] = _deliveries(out, "/customer")
        assert verdict == "signature OK" and "Sorry! It ships today." in body
    finally:
        _stop(looked_up)

    # Keys given on the command line (pairs of our own, so we can sign as a hub would):
    # one bound to /agent, one for any path.
    agent, other = generate_signing_keypair(), generate_signing_keypair()
    port2 = free_port()
    r2 = f"http://127.0.0.1:{port2}"

    async def probe(path: str) -> None:
        raw = b'{"probe": true}'
        async with httpx.AsyncClient() as client:
            posted = await client.post(f"{r2}{path}", content=raw,
                                       headers=sign_with_cryptography(agent.secret, raw))
        assert posted.status_code == 204

    bound = _start(["receive", "--port", str(port2), "--key", f"/agent={agent.public}",
                    "--public-key", other.public], tmp_path / "bound.log")
    try:
        await _wait_for_text(tmp_path / "bound.log", bound, "receiving webhooks on")
        await probe("/agent")
        await probe("/elsewhere")
        out = await _wait_for_text(tmp_path / "bound.log", bound, "POST /agent ",
                                   "POST /elsewhere ")
        assert [d[0] for d in _deliveries(out, "/agent")] == ["signature OK"]
        assert [d[0] for d in _deliveries(out, "/elsewhere")] == [
            "signature REJECTED: invalid_signature"]
    finally:
        _stop(bound)

    only_path = _start(["receive", "--port", str(port2), "--key", f"agent={agent.public}"],
                       tmp_path / "only.log")
    try:
        await _wait_for_text(tmp_path / "only.log", only_path, "receiving webhooks on")
        await probe("/audit")
        await probe("/agent/")
        out = await _wait_for_text(tmp_path / "only.log", only_path, "POST /audit ",
                                   "POST /agent/ ")
        assert [d[0] for d in _deliveries(out, "/audit")] == ["no key for this path"]
        assert [d[0] for d in _deliveries(out, "/agent/")] == ["signature OK"]
    finally:
        _stop(only_path)


def test_receive_refuses_a_private_key_in_one_line(tmp_path: Path) -> None:
    pair = generate_signing_keypair()
    for args in (["--public-key", pair.secret], ["--key", f"/a={pair.secret}"],
                 ["--key", pair.public]):
        done = subprocess.run([sys.executable, "-m", "switchboard.services.cli", "receive",
                               "--port", str(free_port()), *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done
        assert "Traceback" not in done.stderr and pair.secret not in done.stderr


def _dev(log: Path, port: int, data: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "switchboard.services.cli", "dev", "--port", str(port),
             "--data-dir", str(data), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env)


def _ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 90
           ) -> dict[str, object]:
    """dev.json, once `proc` serves /readyz on `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        raise AssertionError(f"dev did not become ready:\n{log.read_text()}")
    state: dict[str, object] = json.loads((log.parent / "var" / "dev.json").read_text())
    return state


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sighup_stops_everything(tmp_path: Path, broker: str) -> None:
    port = free_port()
    log = tmp_path / "dev.log"
    proc = _dev(log, port, tmp_path / "var", "--broker", broker)
    broker_pid = None
    try:
        state = _ready(proc, port, log, timeout=180)
        assert set(state) == {"pid", "url", "bootstrap", "broker", "brokerPid"}
        assert state["pid"] == proc.pid and state["url"] == f"http://127.0.0.1:{port}"
        assert state["broker"] == broker
        broker_pid = state["brokerPid"]
        assert isinstance(broker_pid, int) and _alive(broker_pid)
        broker_port = int(str(state["bootstrap"]).rsplit(":", 1)[1])
        assert port_accepts(broker_port)

        proc.send_signal(signal.SIGHUP)  # what a closed terminal sends
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert _gone_within(broker_pid, 5), f"the {broker} broker outlived switchboard dev"
        assert _port_free(broker_port) and _port_free(port)
        assert not (tmp_path / "var" / "dev.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if isinstance(broker_pid, int) and _alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)


def test_dev_stops_its_tansu_on_sighup(tmp_path: Path) -> None:
    _sighup_stops_everything(tmp_path, "tansu")


def test_dev_stops_its_kafka_on_sighup(tmp_path: Path) -> None:
    _sighup_stops_everything(tmp_path, "kafka")


def test_dev_refuses_a_busy_port_before_starting_a_broker(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        log = tmp_path / "dev.log"
        proc = _dev(log, port, tmp_path / "var")
        assert proc.wait(timeout=60) == 1
    out = log.read_text().strip().splitlines()
    assert len(out) == 1 and out[0].startswith(
        f"switchboard dev: cannot listen on 127.0.0.1:{port}: "), out
    assert "pick --port" in out[0]
    # Nothing was started: no broker log, no dev.json.
    assert not (tmp_path / "var" / "tansu.log").exists()
    assert not (tmp_path / "var" / "dev.json").exists()


def test_dev_finds_a_running_dev_and_a_leftover_broker(tmp_path: Path) -> None:
    data = tmp_path / "var"
    first_port, second_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    first = _dev(log, first_port, data)
    leftover = None
    replaced = None
    try:
        state = _ready(first, first_port, log)
        leftover = state["brokerPid"]
        assert isinstance(leftover, int)

        second_log = tmp_path / "second.log"
        second = _dev(second_log, second_port, data)
        assert second.wait(timeout=60) == 1
        [line] = second_log.read_text().strip().splitlines()
        assert line.startswith(f"switchboard dev: another `switchboard dev` (pid {first.pid}) "
                               f"is running on {data.resolve()} at "
                               f"http://127.0.0.1:{first_port}"), line

        # A dev killed outright leaves its broker (and dev.json) behind.
        first.kill()
        first.wait()
        assert _alive(leftover)
        third_log = tmp_path / "third.log"
        third = _dev(third_log, second_port, data)
        assert third.wait(timeout=60) == 1
        [line] = third_log.read_text().strip().splitlines()
        assert (f"left its tansu broker running (pid {leftover}," in line
                and f"`kill {leftover}`" in line and "--replace" in line), line

        replaced_log = tmp_path / "replaced.log"
        replaced = _dev(replaced_log, second_port, data, "--replace")
        state = _ready(replaced, second_port, replaced_log)
        assert state["pid"] == replaced.pid and state["brokerPid"] != leftover
        assert not _alive(leftover)
        assert f"stopping the tansu broker left running (pid {leftover})" in \
            replaced_log.read_text()
        replaced.send_signal(signal.SIGTERM)
        assert replaced.wait(timeout=60) == 0
    finally:
        for proc in (first, replaced):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if isinstance(leftover, int) and _alive(leftover):
            os.kill(leftover, signal.SIGKILL)


async def test_send_says_what_is_wrong_in_one_line(hub: RunningHub) -> None:
    """The first-hour mistakes with `send`: the public key, a mangled key, the wrong id,
    no hub running. One line each, no traceback, exit 2 for usage and 1 for the rest."""
    pair = generate_signing_keypair()

    def send(key: str, url: str = hub.base_url) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "switchboard.services.cli", "send",
                               "no-such-integration", "--key", key, "--text", "hi",
                               "--url", url], capture_output=True, text=True, timeout=60)

    public = await asyncio.to_thread(send, pair.public)
    assert public.returncode == 2 and public.stderr.strip().splitlines() == [
        "switchboard send: --key must be the integration's privateSigningKey (whsk_…, the "
        "one shown once when it was created; the publicSigningKey only verifies); this is "
        "a publicSigningKey"]
    mangled = await asyncio.to_thread(send, pair.secret[:-4])
    assert mangled.returncode == 2 and len(mangled.stderr.strip().splitlines()) == 1
    assert "this one is malformed" in mangled.stderr and pair.secret[:-4] not in mangled.stderr
    refused = await asyncio.to_thread(send, pair.secret)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert refused.stderr.startswith("switchboard send: the hub answered 401 ")
    assert "is the integration id right" in refused.stderr
    down = f"http://127.0.0.1:{free_port()}"
    gone = await asyncio.to_thread(send, pair.secret, down)
    assert gone.returncode == 1 and gone.stderr.startswith(
        f"switchboard send: cannot reach {down}: is the hub running? (switchboard dev)")
    for done in (public, mangled, refused, gone):
        assert "Traceback" not in done.stderr and done.stdout == ""
    debug = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "switchboard.services.cli", "send", "x", "--key", pair.public,
        "--text", "hi"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SWITCHBOARD_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_dev_finds_its_leftover_kafka_without_dev_json(tmp_path: Path) -> None:
    """A Kafka JVM whose dev was killed, with dev.json gone too: found by its command line
    (this data dir's server.properties), named in one line, stopped by --replace."""
    data = tmp_path / "var"
    port = free_port()
    log = tmp_path / "dev.log"
    first = _dev(log, port, data, "--broker", "kafka")
    jvm = None
    replaced = None
    try:
        jvm = _ready(first, port, log, timeout=180)["brokerPid"]
        assert isinstance(jvm, int)
        first.kill()
        first.wait()
        (data / "dev.json").unlink()
        assert _alive(jvm)

        again_log = tmp_path / "again.log"
        again = _dev(again_log, port, data, "--broker", "kafka")
        assert again.wait(timeout=60) == 1
        [line] = again_log.read_text().strip().splitlines()
        assert line == (f"switchboard dev: a Kafka from a previous `switchboard dev` is still "
                        f"running on {data.resolve()} (pid {jvm}): stop it with `kill {jvm}`, "
                        "or start with --replace"), line

        replaced_log = tmp_path / "replaced.log"
        replaced = _dev(replaced_log, port, data, "--broker", "kafka", "--replace")
        state = _ready(replaced, port, replaced_log, timeout=180)
        assert not _alive(jvm) and state["brokerPid"] != jvm
        assert f"stopping the Kafka left running (pid {jvm})" in replaced_log.read_text()
        replaced.send_signal(signal.SIGTERM)
        assert replaced.wait(timeout=90) == 0
    finally:
        for proc in (first, replaced):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if isinstance(jvm, int) and _alive(jvm):
            os.kill(jvm, signal.SIGKILL)
