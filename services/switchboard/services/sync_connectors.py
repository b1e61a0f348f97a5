"""Connector kinds, registered by name in this one place: a sync profile names a kind
for each side, and the sync worker builds the connector from it.

A kind is a factory from a side's configuration and plaintext credentials (opened only
in the worker, for the connector) to a `Connector`, and optionally a validate hook the
API calls when a profile is created or updated (400 naming the field). Connector modules
register themselves by adding a line to `_builtin`; a kind that is not registered is
refused when a profile is created (400) and fails a run that names it.

The real kinds (their configuration in `switchboard.sync.connector_config`): ``platform``
(the platform contract over HTTP, a tenant URL: the deliverer's SSRF policy), ``syncro``
(customers and contacts through the shared-budget Syncro client) and ``graph`` (a
Microsoft 365 mailbox).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Mapping
from typing import Any

from msgspec import Struct

from switchboard.errors import BadRequest
from switchboard.settings import Settings
from switchboard.sync import connector_config as cc
from switchboard.sync.connector import Connector

__all__ = ["ConnectorContext", "Factory", "Validate", "build", "kinds", "register",
           "validate"]


class ConnectorContext(Struct, frozen=True, kw_only=True):
    """What a factory gets: the side's configuration and credentials, the settings, and
    the process's HTTP client (a `switchboard.services.http_client.HttpClient`) and its
    `Runtime` (for connectors sharing process state, as Syncro's budget)."""

    configuration: Mapping[str, Any]
    credentials: Mapping[str, str]
    settings: Settings
    http: Any = None
    runtime: Any = None
    # Persists a credential the provider rotated (name, old value, new value, names to
    # drop with it), sealed into the profile (`SyncStore.replace_credential`).
    rotate: Any = None


Factory = Callable[[ConnectorContext], Connector]
# (configuration, credential names, settings, credentials required) -> None or BadRequest
Validate = Callable[[Mapping[str, Any], Collection[str], Settings, bool], None]
_KINDS: dict[str, Factory] = {}
_VALIDATE: dict[str, Validate] = {}


def register(kind: str, factory: Factory, validate: Validate | None = None) -> None:
    """Make `kind` available to profiles (a later registration of a kind replaces it)."""
    _KINDS[kind] = factory
    if validate is not None:
        _VALIDATE[kind] = validate
    else:
        _VALIDATE.pop(kind, None)


def validate(kind: str, configuration: Mapping[str, Any], credentials: Collection[str],
             settings: Settings, *, required: bool = True) -> None:
    """BadRequest (field relative to the side) if `kind` refuses this configuration or
    these credential names; `required`: a credential must be given."""
    _builtin(settings)
    check = _VALIDATE.get(kind)
    if check is not None:
        check(configuration, credentials, settings, required)


def _checker(kind: str) -> Validate:
    def check(configuration: Mapping[str, Any], credentials: Collection[str],
              settings: Settings, required: bool) -> None:
        cc.parse_config(kind, configuration, allow_private=settings.allow_private_destinations)
        cc.check_credentials(kind, credentials, required=required)
    return check


# One client per process for tenant URLs (the deliverer's SSRF policy), closed with it.
_PLATFORM_HTTP: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _platform_client(ctx: ConnectorContext) -> Any:
    from switchboard.services.platform_connector import platform_http

    if ctx.runtime is None:
        return platform_http(ctx.settings)
    client = _PLATFORM_HTTP.get(ctx.runtime)
    if client is None:
        client = _PLATFORM_HTTP[ctx.runtime] = platform_http(ctx.settings)
        ctx.runtime.on_stop(client.close)
    return client


def _platform(ctx: ConnectorContext) -> Connector:
    from switchboard.services.platform_connector import PlatformConnector
    from switchboard.sync.platform_wire import PlatformAuth

    allow = ctx.settings.allow_private_destinations
    config: cc.PlatformConfig = cc.parse_config("platform", ctx.configuration,
                                                allow_private=allow)
    name, token = cc.pick_credential("platform", ctx.credentials)
    auth = PlatformAuth(scheme="bearer" if name == "accessToken" else "basic", token=token)
    return PlatformConnector(_platform_client(ctx), config.instance_url, auth,
                             config.capability_set(), allow_private=allow,
                             timeout_s=ctx.settings.provider_timeout_s)


def _syncro(ctx: ConnectorContext) -> Connector:
    from switchboard.services.channels.syncro_client import SyncroClient
    from switchboard.services.channels.syncro_connector import SyncroConnector

    config: cc.SyncroConfig = cc.parse_config("syncro", ctx.configuration,
                                              allow_private=True)
    _, token = cc.pick_credential("syncro", ctx.credentials)
    if ctx.runtime is None:
        raise BadRequest("syncro_needs_runtime", "the syncro kind runs in a sync worker")
    return SyncroConnector(SyncroClient(ctx.runtime), config.subdomain, token,
                           default_customer_id=config.default_customer_id)


def _graph(ctx: ConnectorContext) -> Connector:
    from switchboard.services.graph_connector import GraphConnector
    from switchboard.services.graph_token import GraphTokens
    from switchboard.sync.errors import AuthFailed
    from switchboard.sync.graph_token import credentials_from

    config: cc.GraphConfig = cc.parse_config("graph", ctx.configuration, allow_private=True)
    refresh = credentials_from(ctx.credentials)
    token: Any
    if refresh is None:
        token = ctx.credentials.get("accessToken")
        if not token:
            # Only the app registration so far: the user has not signed in yet.
            raise AuthFailed("graph: no token yet; sign the mailbox in to Microsoft 365 "
                             "(POST …/syncProfiles/{profileId}/connect)")
    else:
        rotate = ctx.rotate

        async def save(old: str, new: str) -> None:
            if rotate is not None:  # the stored access token is stale once refreshed
                await rotate("refreshToken", old, new, ("accessToken",))

        token = GraphTokens(ctx.http, ctx.settings.graph_authority_url, refresh, save=save,
                            timeout_s=ctx.settings.provider_timeout_s)
    return GraphConnector.from_settings(ctx.settings, ctx.http, token,
                                        task_list_id=config.task_list_id,
                                        past_days=config.past_days,
                                        future_days=config.future_days)


def _builtin(settings: Settings) -> None:
    for kind, factory in (("platform", _platform), ("syncro", _syncro), ("graph", _graph)):
        if kind not in _KINDS:
            register(kind, factory, _checker(kind))
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
