"""Fingerprint of what the lock was compiled from (stdlib only: runs before any install).

`./switchboard lock` writes it into requirements.lock's header; a unit test recomputes it,
so a pyproject.toml whose requirements changed without a refreshed lock fails CI.
"""

from __future__ import annotations

import hashlib
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "# inputs-sha256: "


def inputs_fingerprint(root: Path = ROOT) -> str:
    """sha256 over the runtime and test requirements and the tool pins' inputs."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    parts = [
        "\n".join(project["dependencies"]),
        "\n".join(project["optional-dependencies"]["test"]),
        project["requires-python"],
        (root / "tools" / "lock" / "tools.in").read_text(),
    ]
    return hashlib.sha256("\n--\n".join(parts).encode()).hexdigest()


def main() -> int:
    """Prefix the lock at argv[1] with the fingerprint line."""
    lock = Path(sys.argv[1])
    body = [ln for ln in lock.read_text().splitlines() if not ln.startswith(PREFIX)]
    lock.write_text("\n".join([PREFIX + inputs_fingerprint(), *body]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
