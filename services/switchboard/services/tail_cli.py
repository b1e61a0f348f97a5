"""`switchboard tail activities|deliveries|dead` (being built)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    """Register this module's commands on the CLI's subparsers."""
    del sub

