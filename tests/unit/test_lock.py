"""requirements.lock is what pyproject.toml asks for, compiled: CI fails when they part."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", re.M)


def _fingerprint_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "lock_fingerprint", ROOT / "tools" / "lock" / "fingerprint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, Version]:
    return {canonicalize_name(name): Version(version)
            for name, version, _marker in PIN.findall(path.read_text())}


def test_lock_was_compiled_from_this_pyproject() -> None:
    fp = _fingerprint_module()
    first = (ROOT / "requirements.lock").read_text().splitlines()[0]
    assert first == fp.PREFIX + fp.inputs_fingerprint(), (
        "pyproject.toml or tools/lock/tools.in changed since the lock: run ./switchboard lock")


def test_every_requirement_is_pinned_within_its_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(ROOT / "requirements.lock")
    wanted = [Requirement(r) for r in
              project["dependencies"] + project["optional-dependencies"]["test"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req} but the lock pins {pins[name]}")


def test_every_pin_carries_hashes() -> None:
    for path in (ROOT / "requirements.lock", ROOT / "tools" / "lock" / "bootstrap.txt"):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
        for block in blocks:
            if "==" in block.split("\n", 1)[0]:
                assert "--hash=sha256:" in block, f"{path.name}: {block.splitlines()[0]}"


def test_the_bootstrap_installer_is_the_locked_one() -> None:
    assert _pins(ROOT / "tools" / "lock" / "bootstrap.txt")["uv"] == \
        _pins(ROOT / "requirements.lock")["uv"]


def test_the_runtime_lock_is_the_locked_runtime_and_nothing_else() -> None:
    """requirements-runtime.lock (the container image's) pins what the hub runs, at the
    versions of requirements.lock, by hash, and no test tool."""
    fp = _fingerprint_module()
    path = ROOT / "requirements-runtime.lock"
    assert path.read_text().splitlines()[0] == fp.PREFIX + fp.inputs_fingerprint(), (
        "run ./switchboard lock")
    runtime, full = _pins(path), _pins(ROOT / "requirements.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in map(Requirement, project["dependencies"]):
        assert canonicalize_name(req.name) in runtime, f"{req} missing from the runtime lock"
    for name, version in runtime.items():
        assert full[name] == version, f"{name}: {version} here, {full[name]} in requirements.lock"
    for tool in ("pytest", "playwright", "faststream", "hypothesis", "mypy", "ruff"):
        assert tool not in runtime
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    assert all("--hash=sha256:" in b for b in blocks if "==" in b.split("\n", 1)[0])


def test_the_image_runs_as_the_charts_user_from_the_runtime_lock() -> None:
    """No docker daemon in CI: the Dockerfile's promises are checked as text."""
    import yaml

    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")  # multi-stage
    final = lines[lines.index(stages[1]):]
    values = yaml.safe_load((ROOT / "helm" / "switchboard" / "values.yaml").read_text())
    uid, gid = values["podSecurityContext"]["runAsUser"], values["podSecurityContext"][
        "runAsGroup"]
    assert f"USER {uid}:{gid}" in final and uid != 0
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    assert any("PYTHONDONTWRITEBYTECODE=1" in ln for ln in final)  # nothing written at run
    assert 'ENTRYPOINT ["switchboard"]' in final
    build = "\n".join(lines[:lines.index(stages[1])])
    assert "--require-hashes" in build and "requirements-runtime.lock" in build
