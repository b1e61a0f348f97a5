"""Sync profiles: what links two connector instances in a hub, per module, and how a run
of it stands. Records of the compacted `sync.profiles` and `sync.status` topics and the
API's request bodies; pure (sealing is `seal_credentials`, given a `Sealer`).

A profile is BrightSync's sync settings and Autofy's SyncProfile in one: a **portal**
connector and a **mailbox** connector (a kind registered by name, its configuration and
its credentials, sealed as every secret), and per module (contacts, accounts, tasks,
calendar, e-mail logging) a direction, the planner's options and `needReview`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from switchboard.sealer import Sealer
from switchboard.sync.attachments import AttachmentCounts
from switchboard.sync.companies import CompanyCounts
from switchboard.sync.options import ModuleOptions, Side
from switchboard.sync.records import Kind
from switchboard.sync.review import Report
from switchboard.sync.schedule import Schedule

__all__ = [
    "MASK",
    "MODULE_KINDS",
    "AllowSync",
    "ConnectorSpec",
    "Module",
    "ModuleCounts",
    "ModuleSpec",
    "ProfileCreate",
    "ProfileRecord",
    "ProfileUpdate",
    "ReportRecord",
    "RunJob",
    "RunOrigin",
    "RunRequest",
    "StatusRecord",
    "SyncState",
    "credentials_context",
    "open_credentials",
    "seal_credentials",
]

Module = Literal["contacts", "accounts", "tasks", "calendar", "email"]
# The record kind each module syncs.
MODULE_KINDS: dict[Module, Kind] = {
    "contacts": "contact", "accounts": "account", "tasks": "task", "calendar": "event",
    "email": "email",
}
# Who asked for a run: the API, a schedule slot, a source's change notification.
RunOrigin = Literal["api", "schedule", "webhook", "syncro"]
SyncState = Literal["IDLE", "REQUESTED", "QUEUED", "EXECUTING"]
# What reads show in place of a credential; sent back in an update, it means "unchanged".
MASK = "********"

Name = Annotated[str, Meta(min_length=1, max_length=200)]
KindName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
Secret = Annotated[str, Meta(max_length=8192)]


class ConnectorSpec(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """One side: a connector kind (registered by name), its configuration (not secret:
    URLs, tenant ids) and its credentials (tokens, passwords: sealed on the topic, write
    only through the API)."""

    kind: KindName
    configuration: dict[str, Any] = {}
    credentials: dict[str, Secret] = {}


class ModuleSpec(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """One module of a profile: on or off, the planner's options (direction, delete
    propagation, field mappings), and whether it is still in review."""

    enabled: bool = True
    options: ModuleOptions = ModuleOptions()
    # BrightSync's `needReview`: a new module's runs only plan and store the pre-sync
    # report until `allowSync` clears it.
    need_review: bool = True


class ProfileCreate(Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """`portal`, `mailbox` and `modules` are required unless `templateId` names a template
    to take them (and the schedule) from; given with one, they may set its unlocked
    fields only."""

    name: Name | None = None
    portal: ConnectorSpec | None = None
    mailbox: ConnectorSpec | None = None
    modules: dict[Module, ModuleSpec] | None = None
    schedule: Schedule | None = None
    template_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None


class ProfileUpdate(Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """A partial update: absent fields stay; a module given replaces that module (a
    module whose direction or fields change goes back to review unless the body says
    `needReview: false`)."""

    name: Name | None = None
    portal: ConnectorSpec | None = None
    mailbox: ConnectorSpec | None = None
    modules: dict[Module, ModuleSpec] | None = None
    schedule: Schedule | None = None


class ProfileRecord(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A profile as stored on `sync.profiles` (key: profile id), credentials sealed."""

    profile_id: str
    hub_id: str
    name: str
    portal: ConnectorSpec
    mailbox: ConnectorSpec
    modules: dict[Module, ModuleSpec]
    created_at: int
    updated_at: int
    # Autofy's disconnect: the credentials are dropped and runs refused until new ones
    # come in an update.
    connected: bool = True
    schedule: Schedule | None = None
    # When the schedule was last set: its first slot is the first after this.
    schedule_set_at: int = 0
    template_id: str | None = None  # provisioned from (and locked by) this template
    owner: str | None = None  # the signed-up user (``<org>:<user>``) it belongs to
    # The `whsec_` secret of its change-notification webhook, sealed.
    webhook_secret: str | None = None

    def side(self, side: Side) -> ConnectorSpec:
        return self.portal if side == "portal" else self.mailbox


class ModuleCounts(Struct, kw_only=True, rename="camel"):
    """What the last run of one module did (or, in review, would do)."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    matched: int = 0
    conflicts: int = 0
    reviewed: bool = False  # planned only (review mode): nothing was written
    skipped: str | None = None  # why the module did not run (e.g. "unsupported")
    # E-mail with fetchAttachments only (absent otherwise, not even null).
    attachments: AttachmentCounts | UnsetType = UNSET
    # Contacts with createCompany only (absent otherwise).
    companies: CompanyCounts | UnsetType = UNSET


class StatusRecord(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """How a profile's runs stand (`sync.status`, key ``status:<profile id>``): written by
    the API when a run is requested and by the sync worker as it runs."""

    profile_id: str
    hub_id: str
    sync_state: SyncState = "IDLE"
    job_id: str | None = None  # the newest requested run
    # Who asked for that run and whether it reads everything (the hub's run listing,
    # `switchboard.sync.runs`, takes them from here).
    job_origin: RunOrigin | None = None
    job_initial: bool = False
    last_job_id: str | None = None  # the newest run that finished (well or not)
    last_request: int | None = None
    last_successful_sync: int | None = None
    err_message: str | None = None
    err_svc_id: Side | None = None  # which side failed
    err_timestamp: int | None = None
    done: int = 0  # operations applied in the current (or last) run
    total: int = 0
    started_at: int | None = None
    modules: dict[str, ModuleCounts] = {}
    updated_at: int = 0
    running_job_id: str | None = None  # the run taken by a worker and not finished
    # The newest schedule slot whose run finished: a fire of it seen again (a worker
    # that took over before the first one's marker reached it) is not run twice.
    last_slot_done: int | None = None

    def pending(self) -> bool:
        """Whether a requested run has not been taken yet (a trigger then joins it)."""
        return (self.job_id is not None
                and self.job_id not in (self.running_job_id, self.last_job_id))


class ReportRecord(Struct, kw_only=True, rename="camel"):
    """The pre-sync reports of a review run (`sync.status`, key ``report:<profile id>``)."""

    profile_id: str
    hub_id: str
    job_id: str
    created_at: int
    reports: dict[str, Report]


class RunJob(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A run request on `sync.jobs` (key: profile id, so one profile's runs are taken in
    order by one worker)."""

    job_id: str
    profile_id: str
    hub_id: str
    requested_at: int
    # Read everything (or everything since `since`) instead of from the watermarks.
    initial: bool = False
    since: int | None = None  # dtStartUTC, ms
    origin: RunOrigin = "api"
    slot: int | None = None  # a scheduled run's slot (ms)


class RunRequest(Struct, rename="camel", forbid_unknown_fields=True):
    """`initial`: read everything, not only what changed since the last run (the seed
    sends it as a string too). `dtStartUTC`: read what changed since then (ISO 8601 or
    ms), whatever the watermark says."""

    initial: bool | Annotated[str, Meta(pattern="^(true|false)$")] = False
    # The seed's spelling, kept as is on the wire.
    dtStartUTC: str | Annotated[int, Meta(ge=0)] | None = None


class AllowSync(Struct, rename="camel", forbid_unknown_fields=True):
    """The modules to take out of review (all when empty or absent)."""

    modules: list[Module] = []


def credentials_context(profile_id: str, side: Side, name: str) -> str:
    """A credential is bound to its profile, side and name: copied anywhere else it does
    not open."""
    return f"sync_profile:{profile_id}:{side}:{name}"


def webhook_secret_context(profile_id: str) -> str:
    """A profile's change-notification secret is bound to the profile."""
    return f"sync_profile:{profile_id}:webhook_secret"


def seal_credentials(sealer: Sealer, profile_id: str, side: Side,
                     plain: dict[str, str], old: dict[str, str] | None = None
                     ) -> dict[str, str]:
    """`plain` sealed; a value equal to `MASK` keeps the sealed value of `old`."""
    out: dict[str, str] = {}
    for name, value in plain.items():
        if value == MASK:
            if old is not None and name in old:
                out[name] = old[name]
            continue
        out[name] = sealer.seal(value.encode(), credentials_context(profile_id, side, name))
    return out


def open_credentials(sealer: Sealer, rec: ProfileRecord, side: Side) -> dict[str, str]:
    """The plaintext credentials of one side (for its connector, never for a reply)."""
    return {name: sealer.open(value, credentials_context(rec.profile_id, side, name)).decode()
            for name, value in rec.side(side).credentials.items()}


profile_encoder = msgspec.json.Encoder()
profile_decoder = msgspec.json.Decoder(ProfileRecord)
status_decoder = msgspec.json.Decoder(StatusRecord)
report_decoder = msgspec.json.Decoder(ReportRecord)
job_decoder = msgspec.json.Decoder(RunJob)
