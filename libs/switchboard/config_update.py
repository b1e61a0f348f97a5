"""How an update's ``configuration`` meets the stored one (Direct, System, WebChat). Pure.

- ``POST /api/v1/integrations/hubs/{integrationId}`` (the seed's update) replaces the
  configuration with the one given, except that what must not change by omission is kept
  when the update does not name it: a Direct integration's ``integrationType`` (it cannot
  change) and the ``signatureScheme`` its receiver verifies with.
- ``PATCH /api/v1/integrations/{integrationId}`` merges the given object into the stored
  configuration first (JSON Merge Patch, RFC 7396: ``null`` removes a field).
"""

from __future__ import annotations

from typing import Any

import msgspec

from switchboard.channels import ChannelConfig, DirectConfig, SystemConfig
from switchboard.merge_patch import merge_patch

__all__ = ["patched", "replacing"]


def _lower_first(raw: dict[str, Any]) -> dict[str, Any]:
    # The seed mixes "Echo" and "echo"; stored keys are camelCase.
    return {(k[:1].lower() + k[1:]) if isinstance(k, str) else k: v for k, v in raw.items()}


def replacing(current: ChannelConfig, raw: dict[str, Any]) -> dict[str, Any]:
    """The configuration a replacing update asks for: `raw`, plus the kept fields."""
    out = _lower_first(raw)
    if isinstance(current, DirectConfig):
        out.setdefault("integrationType", current.integration_type.value)
    if isinstance(current, DirectConfig | SystemConfig):
        out.setdefault("signatureScheme", current.signature_scheme)
    return out


def patched(current: ChannelConfig, patch: dict[str, Any]) -> dict[str, Any]:
    """The stored configuration with `patch` merged in (RFC 7396)."""
    stored = msgspec.to_builtins(current)
    stored.pop("channel", None)
    merged: dict[str, Any] = merge_patch(stored, _lower_first(patch))
    return merged
