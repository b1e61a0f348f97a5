"""Sync templates (BrightSync's template groups, Autofy's `SyncProfileTemplate`): hub-level
profile settings that provision profiles for new users, with fields the profiles may not
change (`lockedFields`); pure.

A profile made from a template takes its name, both sides (kind, configuration and
credentials), modules and schedule, and skips review (every module `needReview: false`,
as a locked template does in BrightSync). A later change of the template is applied to
its profiles' **locked** fields; unlocked fields are the profile's own from then on.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta, Struct

from switchboard.sync.options import Side
from switchboard.sync.profiles import ConnectorSpec, Module, ModuleSpec, ProfileRecord
from switchboard.sync.schedule import Schedule

__all__ = [
    "LOCKABLE",
    "LockedField",
    "TemplateCreate",
    "TemplateRecord",
    "TemplateUpdate",
    "apply_locked",
    "locked_in",
    "template_decoder",
]

LockedField = Literal[
    "name", "portal", "mailbox", "schedule", "modules", "modules.contacts",
    "modules.accounts", "modules.tasks", "modules.calendar", "modules.email",
]
LOCKABLE: tuple[str, ...] = get_args(LockedField)
Name = Annotated[str, Meta(min_length=1, max_length=200)]


class TemplateCreate(Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    name: Name
    portal: ConnectorSpec
    mailbox: ConnectorSpec
    modules: dict[Module, ModuleSpec]
    schedule: Schedule | None = None
    locked_fields: Annotated[list[LockedField], Meta(max_length=16)] = []


class TemplateUpdate(Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Absent fields stay; `schedule: null` is "no change" (send `enabled: false` to
    stop it)."""

    name: Name | None = None
    portal: ConnectorSpec | None = None
    mailbox: ConnectorSpec | None = None
    modules: dict[Module, ModuleSpec] | None = None
    schedule: Schedule | None = None
    locked_fields: Annotated[list[LockedField], Meta(max_length=16)] | None = None


class TemplateRecord(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A template as stored on `sync.profiles` (key ``template:<id>``), credentials
    sealed under the template's own context."""

    template_id: str
    hub_id: str
    name: str
    portal: ConnectorSpec
    mailbox: ConnectorSpec
    modules: dict[Module, ModuleSpec]
    created_at: int
    updated_at: int
    schedule: Schedule | None = None
    locked_fields: list[LockedField] = []


template_decoder = msgspec.json.Decoder(TemplateRecord)


def template_credentials_context(template_id: str, side: Side, name: str) -> str:
    """A template's credential is bound to its template, side and name."""
    return f"sync_template:{template_id}:{side}:{name}"


def locked_in(locked: list[LockedField], *, name: bool = False, portal: bool = False,
              mailbox: bool = False, schedule: bool = False,
              modules: list[str] | None = None) -> str | None:
    """The first locked field a change touches (flags: which fields it sets), or None."""
    touched = [f for f, on in (("name", name), ("portal", portal), ("mailbox", mailbox),
                               ("schedule", schedule)) if on]
    touched += ["modules." + m for m in modules or []]
    for field in touched:
        if field in locked or (field.startswith("modules.") and "modules" in locked):
            return field
    return None


def apply_locked(profile: ProfileRecord, template: TemplateRecord, *,
                 portal: ConnectorSpec, mailbox: ConnectorSpec, now: int) -> ProfileRecord:
    """`profile` with the template's locked fields (sides already sealed for the profile
    by the caller: `portal`, `mailbox`). A locked module is taken as the template has it,
    out of review."""
    locked = set(template.locked_fields)
    changes: dict[str, object] = {}
    if "name" in locked:
        changes["name"] = template.name
    if "portal" in locked:
        changes["portal"] = portal
    if "mailbox" in locked:
        changes["mailbox"] = mailbox
    if "schedule" in locked and template.schedule != profile.schedule:
        changes["schedule"] = template.schedule
        changes["schedule_set_at"] = now
    modules = dict(profile.modules)
    for module, spec in template.modules.items():
        if "modules" in locked or f"modules.{module}" in locked:
            modules[module] = msgspec.structs.replace(spec, need_review=False)
    if "modules" in locked:
        modules = {m: s for m, s in modules.items() if m in template.modules}
    changes["modules"] = modules
    new = msgspec.structs.replace(profile, **changes)
    if new == profile:
        return profile
    return msgspec.structs.replace(new, updated_at=now)
