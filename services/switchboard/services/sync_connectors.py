"""Connector kinds, registered by name in this one place: a sync profile names a kind
for each side, and the sync worker builds the connector from it.

A kind is a factory from a side's configuration and plaintext credentials (opened only
in the worker, for the connector) to a `Connector`. Connector modules register
themselves by adding a line to `_builtin`; a kind that is not registered is refused when
a profile is created (400) and fails a run that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from msgspec import Struct

from switchboard.errors import BadRequest
from switchboard.settings import Settings
from switchboard.sync.connector import Connector

__all__ = ["ConnectorContext", "Factory", "build", "kinds", "register"]


class ConnectorContext(Struct, frozen=True, kw_only=True):
    """What a factory gets: the side's configuration and credentials, the settings, and
    the process's HTTP client (a `switchboard.services.http_client.HttpClient`)."""

    configuration: Mapping[str, Any]
    credentials: Mapping[str, str]
    settings: Settings
    http: Any = None


Factory = Callable[[ConnectorContext], Connector]
_KINDS: dict[str, Factory] = {}


def register(kind: str, factory: Factory) -> None:
    """Make `kind` available to profiles (a later registration of a kind replaces it)."""
    _KINDS[kind] = factory


def _builtin(settings: Settings) -> None:
    # The real connectors (platform, Syncro, Microsoft Graph) register here as they land.
    if settings.sync_test_connectors:
        from switchboard.services.sync_testfile import testfile_connector

        register("testfile", testfile_connector)


def kinds(settings: Settings) -> frozenset[str]:
    """The kinds a profile may name in this process."""
    _builtin(settings)
    return frozenset(_KINDS)


def build(kind: str, ctx: ConnectorContext) -> Connector:
    """A connector of `kind` for one side (BadRequest if the kind is unknown)."""
    _builtin(ctx.settings)
    factory = _KINDS.get(kind)
    if factory is None:
        raise BadRequest("unknown_connector_kind", f"no connector kind {kind[:64]!r}",
                         field="kind")
    return factory(ctx)
