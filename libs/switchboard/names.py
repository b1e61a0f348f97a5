"""Case-insensitive names: the fixed vocabularies the API accepts in any case.

Wherever the set of names is ours and fixed (channels, integration types, signature
schemes, compat modes, event filters, delivery statuses, status names), a request may
spell a name in any case; it is normalised to the canonical spelling on input, so what
is stored, compared and answered is always that one spelling. Free text (names of
integrations, ids, a provider's own values) keeps its case.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from switchboard.model import ChannelId, IntegrationType, StatusId

# Hubster's names for statusId codes: a request may give the name instead of the code.
STATUS_NAMES: dict[str, int] = {"Active": StatusId.ACTIVE, "Paused": StatusId.PAUSED}
SIGNATURE_SCHEMES = ("standard", "hubster")


class Vocabulary:
    """A fixed set of names, looked up in any case (Unicode casefold)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        self._by_fold = {n.casefold(): n for n in self.names}

    def canonical(self, value: str) -> str | None:
        """The canonical spelling of `value`, or None if it is not one of the names."""
        return self._by_fold.get(value.casefold())

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value.casefold() in self._by_fold


CHANNELS = Vocabulary(c.value for c in ChannelId)
INTEGRATION_TYPES = Vocabulary(t.value for t in IntegrationType)
SCHEMES = Vocabulary(SIGNATURE_SCHEMES)
STATUSES = Vocabulary(STATUS_NAMES)


def canonical_or_same(value: Any, vocabulary: Vocabulary) -> Any:
    """`value` in its canonical spelling if it is a name of `vocabulary`; anything else
    unchanged, so the validation that follows refuses it with its usual message."""
    if isinstance(value, str):
        found = vocabulary.canonical(value)
        if found is not None:
            return found
    return value


def canonical_list(values: Any, vocabulary: Vocabulary) -> Any:
    """Each name of a list in its canonical spelling (anything else unchanged)."""
    if not isinstance(values, list):
        return values
    return [canonical_or_same(v, vocabulary) for v in values]


def status_code(value: Any) -> Any:
    """A statusId given as Hubster's name (``"active"``, ``"Paused"``) → its code;
    anything else unchanged."""
    found = STATUSES.canonical(value) if isinstance(value, str) else None
    return STATUS_NAMES[found] if found is not None else value
