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
