"""JSON Merge Patch (RFC 7396): what `PATCH` does to an integration. Pure."""

from __future__ import annotations

from typing import Any

__all__ = ["merge_patch"]


def merge_patch(target: Any, patch: Any) -> Any:
    """`target` with `patch` applied, per RFC 7396 section 2; neither argument is changed.

    An object patch merges member by member (``null`` removes a member); any other patch
    (an array, a string, ``null`` itself) replaces the target whole.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
