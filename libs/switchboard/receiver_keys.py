"""Which public keys `switchboard receive` checks a delivery with, by the path it arrived
at, and what it says about it (pure; the CLI serves HTTP and asks the API).

Keys come from `--public-key` (any path), `--key PATH=whpk_…` (that path only) and, with
`--url`/`--token`, from the hub: each integration's publicSigningKey under the path of
its configured webhookUrl.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from msgspec import Struct, field

from switchboard import webhooks
from switchboard.errors import SwitchboardError
from switchboard.keys import PUBLIC_KEY_PREFIX, SECRET_KEY_PREFIX, parse_public_key

NO_KEY_AT_ALL = "unverified (no key given: --public-key, --key PATH=KEY or --url/--token)"
NO_KEY_FOR_PATH = "no key for this path"


class KeyRing(Struct):
    anywhere: list[str] = field(default_factory=list)
    by_path: dict[str, list[str]] = field(default_factory=dict)
    from_hub: bool = False  # keys are looked up at the hub (none there yet is no reason)

    def empty(self) -> bool:
        """No key was given in any way: nothing can be verified."""
        return not self.anywhere and not self.by_path and not self.from_hub

    def keys_for(self, path: str) -> list[str]:
        """The keys a delivery at `path` may be signed with."""
        return [*self.by_path.get(normal_path(path), []), *self.anywhere]


def normal_path(path: str) -> str:
    """A path as keys are filed under it: leading slash, no trailing one."""
    return "/" + path.strip("/")


def check_public_key(key: str, option: str) -> str:
    """`key` if it is a well-formed publicSigningKey; else ValueError saying which key
    the option wants (a privateSigningKey given here is the usual mix-up)."""
    if key.startswith(SECRET_KEY_PREFIX):
        raise ValueError(f"{option} wants the integration's publicSigningKey (whpk_…); "
                         "this is a privateSigningKey, which signs what is sent to the hub")
    try:
        parse_public_key(key)
    except SwitchboardError as exc:
        raise ValueError(f"{option}: {exc.description} (a publicSigningKey starts with "
                         f"{PUBLIC_KEY_PREFIX!r})") from None
    return key


def parse_path_key(text: str) -> tuple[str, str]:
    """`PATH=whpk_…` as (path, key); ValueError if it is not that."""
    path, sep, key = text.partition("=")
    if not sep or not path or not key:
        raise ValueError(f"--key wants PATH=PUBLICKEY (e.g. /agent=whpk_…), got {text[:40]!r}")
    return normal_path(path), check_public_key(key, "--key")


def ring_from(public_keys: Iterable[str], path_keys: Iterable[str],
              fetched: Mapping[str, list[str]] | None = None) -> KeyRing:
    """The key ring the options (and the hub's integrations, if fetched) give."""
    ring = KeyRing(anywhere=[check_public_key(k, "--public-key") for k in public_keys],
                   from_hub=fetched is not None)
    for path, keys in (fetched or {}).items():
        ring.by_path.setdefault(normal_path(path), []).extend(keys)
    for text in path_keys:
        path, key = parse_path_key(text)
        ring.by_path.setdefault(path, []).append(key)
    return ring


def keys_by_webhook_path(integrations: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each integration's publicSigningKey under the path of its webhookUrl (as the API
    lists them); integrations without either are left out."""
    out: dict[str, list[str]] = {}
    for integ in integrations:
        config = integ.get("configuration") or {}
        url, key = config.get("webhookUrl"), config.get("publicSigningKey")
        if isinstance(url, str) and isinstance(key, str):
            out.setdefault(normal_path(urlsplit(url).path), []).append(key)
    return out


def verdict(ring: KeyRing, path: str, headers: Mapping[str, str], body: bytes, now: int
            ) -> str:
    """What `receive` prints about a delivery's signature."""
    if ring.empty():
        return NO_KEY_AT_ALL
    keys = ring.keys_for(path)
    if not keys:
        return NO_KEY_FOR_PATH
    try:
        webhooks.Verifier(public_keys=keys).verify(headers, body, now=now)
    except SwitchboardError as exc:
        return f"signature REJECTED: {exc.code}"
    return "signature OK"
