"""The sealed values of `sync.profiles` under the current key (for `switchboard reseal`)
and listed with their contexts (for `switchboard doctor`). Pure.

The table holds four kinds of record, told apart by key: a profile (its id: each side's
credentials and its change-notification secret), ``template:<id>`` (each side's
credentials), ``app:<id>`` (the signup app's secret) and ``user:<key>`` (nothing sealed).
Each value is bound to its record (the contexts in `profiles`, `templates`, `signup`);
after a key rotation every value is opened with whichever configured key sealed it and
sealed again under the first one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from switchboard.sealer import Sealer, UnsealError
from switchboard.sync.options import SIDES, Side
from switchboard.sync.profiles import (
    ConnectorSpec,
    ProfileRecord,
    credentials_context,
    profile_decoder,
    webhook_secret_context,
)
from switchboard.sync.signup import app_decoder, app_secret_context
from switchboard.sync.templates import template_credentials_context, template_decoder

__all__ = ["reseal_profile", "reseal_profile_value", "sealed_values"]

_enc = msgspec.json.Encoder()
APP, TEMPLATE, USER = b"app:", b"template:", b"user:"
T = TypeVar("T")


def _sides(sealer: Sealer, portal: ConnectorSpec, mailbox: ConnectorSpec,
           context: Callable[[Side, str], str]) -> dict[Side, ConnectorSpec] | None:
    """Both sides with their credentials resealed; None if all already are current."""
    sides: dict[Side, ConnectorSpec] = {}
    changed = False
    for side, spec in zip(SIDES, (portal, mailbox), strict=True):
        creds: dict[str, str] = {}
        for name, token in spec.credentials.items():
            creds[name] = sealer.reseal(token, context(side, name))
            changed |= creds[name] != token
        sides[side] = msgspec.structs.replace(spec, credentials=creds)
    return sides if changed else None


def reseal_profile(sealer: Sealer, rec: ProfileRecord) -> ProfileRecord | None:
    """`rec` with its credentials and webhook secret sealed under the current key, or None
    if all already are. UnsealError if one opens under no configured key (or belongs
    elsewhere)."""
    sides = _sides(sealer, rec.portal, rec.mailbox,
                   lambda side, name: credentials_context(rec.profile_id, side, name))
    secret = rec.webhook_secret
    if secret is not None:
        secret = sealer.reseal(secret, webhook_secret_context(rec.profile_id))
    if sides is None and secret == rec.webhook_secret:
        return None
    if sides is not None:
        rec = msgspec.structs.replace(rec, portal=sides["portal"], mailbox=sides["mailbox"])
    return msgspec.structs.replace(rec, webhook_secret=secret)


def _decoded(decoder: msgspec.json.Decoder[T], value: bytes, what: str) -> T:
    try:
        return decoder.decode(value)
    except msgspec.DecodeError:
        raise UnsealError("unseal_failed", f"not a sync {what} record") from None


def _misplaced(what: str) -> UnsealError:
    # Its values are bound to another id: they would not open here.
    return UnsealError("unseal_failed", f"a {what} record under another {what}'s key")


def reseal_profile_value(sealer: Sealer, key: bytes, value: bytes) -> bytes | None:
    """A `sync.profiles` record's value resealed (None: already current, or nothing in it
    is sealed). UnsealError if a value opens under no configured key."""
    if key.startswith(USER):
        return None
    if key.startswith(APP):
        app = _decoded(app_decoder, value, "signup app")
        if app.app_id.encode() != key[len(APP):]:
            raise _misplaced("signup app")
        secret = sealer.reseal(app.secret, app_secret_context(app.app_id))
        return None if secret == app.secret else _enc.encode(
            msgspec.structs.replace(app, secret=secret))
    if key.startswith(TEMPLATE):
        tpl = _decoded(template_decoder, value, "template")
        if tpl.template_id.encode() != key[len(TEMPLATE):]:
            raise _misplaced("template")
        sides = _sides(sealer, tpl.portal, tpl.mailbox, lambda side, name:
                       template_credentials_context(tpl.template_id, side, name))
        return None if sides is None else _enc.encode(msgspec.structs.replace(
            tpl, portal=sides["portal"], mailbox=sides["mailbox"]))
    rec = _decoded(profile_decoder, value, "profile")
    if rec.profile_id.encode() != key:
        raise _misplaced("profile")
    fresh = reseal_profile(sealer, rec)
    return None if fresh is None else _enc.encode(fresh)


def sealed_values(key: bytes, value: bytes) -> list[tuple[str, str]]:
    """Every sealed value of one `sync.profiles` record with the context it opens under
    (none for a user, or a record that does not decode)."""
    try:
        if key.startswith(USER):
            return []
        if key.startswith(APP):
            app = app_decoder.decode(value)
            return [(app_secret_context(app.app_id), app.secret)]
        if key.startswith(TEMPLATE):
            tpl = template_decoder.decode(value)
            return [(template_credentials_context(tpl.template_id, side, name), token)
                    for side, spec in zip(SIDES, (tpl.portal, tpl.mailbox), strict=True)
                    for name, token in spec.credentials.items()]
        rec = profile_decoder.decode(value)
    except msgspec.DecodeError:
        return []
    out = [(credentials_context(rec.profile_id, side, name), token)
           for side in SIDES for name, token in rec.side(side).credentials.items()]
    if rec.webhook_secret is not None:
        out.append((webhook_secret_context(rec.profile_id), rec.webhook_secret))
    return out
