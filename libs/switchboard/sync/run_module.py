"""One module of a sync run, the pure parts: which fields it syncs (its options, else the
kind's defaults and references every side stores) and what its plan counts as."""

from __future__ import annotations

import msgspec

from switchboard.sync.connector import Connector
from switchboard.sync.ops import Create, Plan, Update
from switchboard.sync.options import DEFAULT_FIELDS, FieldMap, ModuleOptions
from switchboard.sync.profiles import MODULE_KINDS, ModuleCounts
from switchboard.sync.records import Kind
from switchboard.sync.references import REFERENCES

# The module that syncs each kind (the pairs of a kind live under it).
MODULE_OF: dict[Kind, str] = {k: m for m, k in MODULE_KINDS.items()}


def stored_fields(conn: Connector, kind: Kind) -> frozenset[str] | None:
    """The fields `conn` stores for `kind` (None: any canonical field)."""
    method = getattr(conn, "stored_fields", None)
    return frozenset(method(kind)) if callable(method) else None


def effective_options(kind: Kind, options: ModuleOptions,
                      stored: list[frozenset[str] | None]) -> ModuleOptions:
    """`options` with the fields to sync spelled out: the ones it names, else the
    kind's defaults and references that every side stores."""
    if options.fields is not None:
        return options
    names = [n for n in (*DEFAULT_FIELDS[kind], *REFERENCES.get(kind, {}))
             if all(s is None or n in s for s in stored)]
    return msgspec.structs.replace(options, fields=tuple(FieldMap(n, n) for n in names))


def module_counts(result: Plan, reviewed: bool = False) -> ModuleCounts:
    """A plan's creates, updates, deletes, matches and conflicts, as a run reports them."""
    c = ModuleCounts(matched=len(result.matched), conflicts=len(result.conflicts),
                     reviewed=reviewed)
    for op in result.ops:
        if isinstance(op, Create):
            c.created += 1
        elif isinstance(op, Update):
            c.updated += 1
        else:
            c.deleted += 1
    return c
