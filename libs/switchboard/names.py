"""Case-insensitive names: the fixed vocabularies the API accepts in any case.

Wherever the set of names is ours and fixed (channels, integration types, signature
schemes, compat modes, event filters, delivery statuses, status names), a request may
spell a name in any case; it is normalised to the canonical spelling on input, so what
is stored, compared and answered is always that one spelling. Free text (names of
integrations, ids, a provider's own values) keeps its case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, get_args

import msgspec

from switchboard import jsonsafe
from switchboard.errors import BadRequest
from switchboard.model import ChannelId, DeliveryStatus, IntegrationType, Message, StatusId

T = TypeVar("T")
_ANY: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

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
DELIVERY_STATUSES = Vocabulary(get_args(DeliveryStatus))
# The tags of an activity's message union (`text`, `image`, …), and its own `type`.
MESSAGE_TYPES = Vocabulary(m.__struct_config__.tag for m in get_args(Message))
INBOUND_NAMES: dict[str, Vocabulary] = {"type": Vocabulary(("message",)),
                                        "message.type": MESSAGE_TYPES}


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


def decode_folding(data: bytes, decoder: msgspec.json.Decoder[T],
                   fields: Mapping[str, Vocabulary], *, invalid: str = "invalid_request") -> T:
    """`jsonsafe.decode`, where a name at one of `fields` (dotted paths) may be in any case.

    Names msgspec matches exactly (a tagged union's tag, a Literal) are folded only when
    the decode refuses one of them: a body in the canonical spelling, nearly every body,
    costs nothing more; another spelling costs one generic decode and encode more.
    """
    try:
        return jsonsafe.decode(data, decoder, invalid=invalid)
    except BadRequest as exc:
        if exc.field not in fields:
            raise
        refused = exc
    # msgspec refuses a value before it reads on: the rest may still be malformed.
    doc = jsonsafe.decode(data, _ANY)
    folded = False
    for path, vocabulary in fields.items():
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(last), str):
            found = vocabulary.canonical(node[last])
            if found is not None and found != node[last]:
                node[last], folded = found, True
    if not folded:
        raise refused
    return jsonsafe.decode(msgspec.json.encode(doc), decoder, invalid=invalid)
