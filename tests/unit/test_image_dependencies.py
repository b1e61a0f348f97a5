"""The container image installs only requirements-runtime.lock and the package (see the
Dockerfile). With no docker daemon in CI, the same two installs are done into a fresh
virtualenv here, and every service of the hub must build from them alone: a runtime
import of a test-only package (an SDK, a test tool) fails this test, not a deployment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")

BUILD_EVERY_SERVICE = """
from switchboard.keys import generate_secret_key_b64
from switchboard.services.app import SERVICES, build_app
from switchboard.settings import Settings

settings = Settings(secret_key=generate_secret_key_b64())
for service in SERVICES:
    build_app(settings, [service])
print("built:", ",".join(SERVICES))
"""


def _run(*args: str | Path) -> str:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                         timeout=600, check=False, cwd=ROOT)
    assert out.returncode == 0, f"{args}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_the_runtime_lock_alone_runs_every_service(tmp_path: Path) -> None:
    venv = tmp_path / "image"
    _run(UV, "venv", "-q", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    # As the Dockerfile does: the locked dependencies by hash, then the package itself.
    _run(UV, "pip", "install", "-q", "--python", python, "--require-hashes", "--no-deps",
         "-r", ROOT / "requirements-runtime.lock")
    _run(UV, "pip", "install", "-q", "--python", python, "--no-deps", ROOT)
    built = _run(python, "-c", BUILD_EVERY_SERVICE)
    assert "built: api,ingress,router,deliverer,stream,sync" in built
    assert "usage: switchboard" in _run(venv / "bin" / "switchboard", "--help")
