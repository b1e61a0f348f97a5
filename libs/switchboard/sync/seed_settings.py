"""Seed 000's flat ``syncSettings`` JSON (``syncContacts``, ``contSyncDirection``,
``contPortalSyncTags``, …) to and from a profile's modules. Pure: the API
(`sync_settings_api`) reads the profile, calls these and stores the result.

Tags and skipped domains are comma-separated strings, as in the seed. A module the
profile lacks reads as off with the defaults; a key of it in a PUT adds it (off unless
its ``sync…`` key says on). Keys of what is not built answer their only value and refuse
the other: ``contPortalSyncMine`` (true: the connector contract lists the user's own
records).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from switchboard.errors import BadRequest
from switchboard.sync.options import Direction, ModuleOptions, SideFilter
from switchboard.sync.profiles import Module, ModuleSpec

__all__ = ["SEED_KEYS", "from_seed", "graph_window", "json_schema", "to_seed"]

_replace = msgspec.structs.replace
Getter = Callable[[ModuleSpec], Any]
Setter = Callable[[ModuleSpec, Any], ModuleSpec]


def _opts(spec: ModuleSpec, **changes: Any) -> ModuleSpec:
    return _replace(spec, options=_replace(spec.options, **changes))


def _email(spec: ModuleSpec, **changes: Any) -> ModuleSpec:
    return _opts(spec, email=_replace(spec.options.email, **changes))


def _filter(spec: ModuleSpec, side: str, **changes: Any) -> ModuleSpec:
    old: SideFilter = getattr(spec.options, f"{side}_filter")
    return _opts(spec, **{f"{side}_filter": _replace(old, **changes)})


def _tags(value: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip())


# key -> (module, value type, read, write). The value types are checked before writing.
_Key = tuple[Module, str, Getter, Setter]


def _side_keys(module: Module, prefix: str, side: str) -> dict[str, _Key]:
    cap = side.capitalize()
    return {
        f"{prefix}{cap}SyncAll": (
            module, "bool", lambda s: getattr(s.options, f"{side}_filter").sync_all,
            lambda s, v: _filter(s, side, sync_all=v)),
        f"{prefix}{cap}SyncTags": (
            module, "tags", lambda s: ",".join(getattr(s.options, f"{side}_filter").sync_tags),
            lambda s, v: _filter(s, side, sync_tags=_tags(v))),
    }


def _direction(module: Module, key: str) -> dict[str, _Key]:
    return {key: (module, "direction", lambda s: s.options.direction.value,
                  lambda s, v: _opts(s, direction=Direction(v)))}


def _enabled(module: Module, key: str) -> dict[str, _Key]:
    return {key: (module, "bool", lambda s: s.enabled,
                  lambda s, v: _replace(s, enabled=v))}


def _email_flag(key: str, name: str) -> dict[str, _Key]:
    return {key: ("email", "bool", lambda s: getattr(s.options.email, name),
                  lambda s, v: _email(s, **{name: v}))}


def _fixed(module: Module, value: bool) -> _Key:
    return (module, "fixed:" + str(value).lower(), lambda s: value, lambda s, v: s)


_KEYS: dict[str, _Key] = {
    **_enabled("email", "logEmail"),
    "emailSkipDomains": ("email", "tags", lambda s: ",".join(s.options.email.skip_domains),
                         lambda s, v: _email(s, skip_domains=_tags(v))),
    **_email_flag("emailFetchAttachments", "fetch_attachments"),
    **_email_flag("emailCreateLeads", "create_leads"),
    **_email_flag("emailCreateContacts", "create_contacts"),
    **_email_flag("emailAutoDetectDeal", "auto_detect_deal"),
    **_email_flag("emailCreateCompany", "create_company"),
    **_enabled("calendar", "syncCalendar"),
    **_direction("calendar", "calSyncDirection"),
    "calSyncPrivate": ("calendar", "bool", lambda s: s.options.sync_private,
                       lambda s, v: _opts(s, sync_private=v)),
    "calFetchAttachments": ("calendar", "bool", lambda s: s.options.fetch_attachments,
                            lambda s, v: _opts(s, fetch_attachments=v)),
    **_side_keys("calendar", "cal", "mailbox"),
    "calMailboxSyncMeetingsOnly": ("calendar", "bool", lambda s: s.options.meetings_only,
                                   lambda s, v: _opts(s, meetings_only=v)),
    "calPastWeeks": ("calendar", "weeks", lambda s: s.options.past_weeks,
                     lambda s, v: _opts(s, past_weeks=v)),
    "calFutureWeeks": ("calendar", "weeks", lambda s: s.options.future_weeks,
                       lambda s, v: _opts(s, future_weeks=v)),
    **_enabled("contacts", "syncContacts"),
    **_direction("contacts", "contSyncDirection"),
    "contCreateCompany": ("contacts", "bool", lambda s: s.options.create_company,
                          lambda s, v: _opts(s, create_company=v)),
    **_side_keys("contacts", "cont", "portal"),
    **_side_keys("contacts", "cont", "mailbox"),
    "contPortalSyncMine": _fixed("contacts", True),
    "contMailboxSyncDeleted": ("contacts", "bool", lambda s: s.options.mailbox_deletes,
                               lambda s, v: _opts(s, mailbox_deletes=v)),
    **_enabled("tasks", "syncTasks"),
    **_direction("tasks", "taskSyncDirection"),
    **_side_keys("tasks", "task", "mailbox"),
}
SEED_KEYS: tuple[str, ...] = tuple(_KEYS)

# What a module the profile lacks reads as (and starts from when a PUT names it).
_ABSENT = ModuleSpec(enabled=False)


def to_seed(modules: Mapping[Module, ModuleSpec]) -> dict[str, Any]:
    """The profile's modules as seed 000's flat settings."""
    return {key: get(modules.get(module, _ABSENT)) for key, (module, _, get, _s)
            in _KEYS.items()}


def _check(key: str, kind: str, value: Any) -> Any:
    ok: bool
    if kind == "bool" or kind.startswith("fixed:"):
        ok = isinstance(value, bool)
    elif kind == "tags":
        ok = isinstance(value, str) and len(value) <= 10_000
    elif kind == "direction":
        ok = isinstance(value, str) and value in {d.value for d in Direction}
    else:  # weeks
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool)
                               and 0 <= value <= 520)
    if not ok:
        want = {"bool": "true or false", "tags": "a comma-separated string",
                "direction": "BOTH, TO_PORTAL or FROM_PORTAL",
                "weeks": "a whole number of weeks from 0 to 520, or null"}
        raise BadRequest("invalid_setting", f"{key}: expected "
                         f"{want.get(kind, 'true or false')}", field=key)
    if kind.startswith("fixed:") and str(value).lower() != kind[6:]:
        raise BadRequest("unsupported_setting",
                         f"{key}: only {kind[6:]} is supported (see the README's sync "
                         "settings table)", field=key)
    if kind == "tags":
        for tag in _tags(value):
            if len(tag) > 256:
                raise BadRequest("invalid_setting", f"{key}: a tag longer than 256",
                                 field=key)
    return value


def from_seed(body: Mapping[str, Any], modules: Mapping[Module, ModuleSpec]
              ) -> dict[Module, ModuleSpec]:
    """`modules` with the seed settings in `body` applied (absent keys stay). Answers
    only the modules `body` touched; an unknown key or a wrong value is a 400 naming it."""
    for key in body:
        if key not in _KEYS:
            raise BadRequest("unknown_setting", f"unknown sync setting {key!r}", field=key)
    out: dict[Module, ModuleSpec] = {}
    for key, value in body.items():
        module, kind, _, put = _KEYS[key]
        _check(key, kind, value)
        out[module] = put(out.get(module) or modules.get(module, _ABSENT), value)
    return out


def graph_window(options: ModuleOptions) -> dict[str, int]:
    """The Graph mailbox configuration (``pastDays`` / ``futureDays``) that reads the
    calendar module's window; nothing for a window left to the connector."""
    out: dict[str, int] = {}
    if options.past_weeks is not None:
        out["pastDays"] = options.past_weeks * 7
    if options.future_weeks is not None:
        out["futureDays"] = max(1, options.future_weeks * 7)
    return out



_JSON_TYPES: dict[str, dict[str, Any]] = {
    "bool": {"type": "boolean"}, "tags": {"type": "string", "maxLength": 10_000},
    "direction": {"enum": [d.value for d in Direction]},
    "weeks": {"type": ["integer", "null"], "minimum": 0, "maximum": 520},
    "fixed:true": {"const": True}, "fixed:false": {"const": False},
}


def json_schema() -> dict[str, Any]:
    """The flat settings' JSON Schema (every key optional in a PUT)."""
    return {"type": "object", "additionalProperties": False,
            "properties": {key: _JSON_TYPES[kind] for key, (_, kind, _g, _s)
                           in _KEYS.items()}}
