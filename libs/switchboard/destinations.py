"""Where deliveries may go: the SSRF policy over addresses and webhook URLs, pure.

A webhook URL is the tenant's input, so without a policy any tenant could make the hub
POST to its own loopback, the cluster's private network or a cloud metadata service.
Addresses are judged where the socket is about to connect (see the HTTP client's socket
factory), so a DNS answer that changes between create and send cannot slip through; the
URL check at create/update only refuses what is already certain (a literal address).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from switchboard.errors import BadRequest

__all__ = ["MAX_URL_CHARS", "forbidden_address", "validate_webhook_url"]

MAX_URL_CHARS = 2048
# Unicode whitespace: what str.isspace() calls a space (isprintable() lets " " through).
_SPACE = re.compile(r"\s")

# Besides what `ipaddress` already flags (private, loopback, link-local, multicast,
# reserved, unspecified): carrier-grade NAT and the IPv6 ranges that embed IPv4 hosts.
_EXTRA_FORBIDDEN = tuple(ipaddress.ip_network(n) for n in (
    "100.64.0.0/10",  # CGNAT (RFC 6598): provider-internal
    "192.0.0.0/24",  # IETF protocol assignments
    "198.18.0.0/15",  # benchmarking
    "64:ff9b::/96",  # NAT64: would reach the embedded IPv4 address
    "64:ff9b:1::/48",
    "2002::/16",  # 6to4
    "fd00:ec2::/32",  # AWS's IPv6 metadata endpoint (inside fc00::/7 as well)
))


def forbidden_address(address: str) -> bool:
    """Whether a delivery must not connect to `address` (an IP literal, v4 or v6).

    Anything that is not a public unicast address is forbidden, including IPv4 addresses
    wrapped in IPv6 (mapped, compatible) and unparsable input.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # A dual-stack socket connecting to ::ffff:a.b.c.d reaches a.b.c.d itself.
            return forbidden_address(str(ip.ipv4_mapped))
        if ip.packed[:12] == bytes(12):  # IPv4-compatible (deprecated) ::a.b.c.d
            return True
        # Site-local (fec0::/10, deprecated) and the unallocated ranges: `is_global` of
        # older Pythons (3.11 before the 2024 ipaddress fixes) calls them global.
        # 6to4 (2002::/16) is refused whole below, whatever address it embeds.
        if ip.is_site_local or ip.is_reserved:
            return True
    if not ip.is_global or ip.is_multicast:
        return True
    return any(ip in net for net in _EXTRA_FORBIDDEN if net.version == ip.version)


def _literal_host(host: str) -> str | None:
    """The IP literal `host` names, or None for a host name."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def validate_webhook_url(url: str, *, allow_private: bool, field: str) -> str:
    """Check a tenant's webhook URL; return it unchanged or raise BadRequest on `field`.

    http or https, a valid host (name or address), no user-info, at most 2,048
    characters; with `allow_private` off, a literal non-public address is refused here
    (names are judged on the address actually connected to, at send time).
    """
    if len(url) > MAX_URL_CHARS:
        raise BadRequest("invalid_url", f"at most {MAX_URL_CHARS} characters", field)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError:
        raise BadRequest("invalid_url", "not a valid URL", field) from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest("invalid_url", "the scheme must be http or https", field)
    if "@" in parts.netloc:
        raise BadRequest("invalid_url", "user-info is not allowed in a webhook URL", field)
    host = parts.hostname or ""
    if not host or port == 0:
        raise BadRequest("invalid_url", "the URL needs a host", field)
    literal = _literal_host(host)
    if literal is None and not _valid_hostname(host):
        raise BadRequest("invalid_url", "the host is not a valid name or address", field)
    # Any Unicode space (U+00A0, U+2028, ...) or unprintable character (controls, format
    # characters, lone surrogates) too: none belongs in a URL, and some would let a
    # URL look like another one in a log or break the request line.
    if not url.isprintable() or _SPACE.search(url):
        raise BadRequest("invalid_url", "spaces and control characters are not allowed",
                         field)
    if literal is not None and not allow_private and forbidden_address(literal):
        raise BadRequest("destination_forbidden",
                         "deliveries to private, loopback or link-local addresses are not "
                         "allowed", field)
    return url


def _valid_hostname(host: str) -> bool:
    """RFC 1123 host name (after IDNA), at most 253 characters."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    if not ascii_host or len(ascii_host) > 253:
        return False
    labels = ascii_host.rstrip(".").split(".")
    last = labels[-1].lower()
    if last.isdigit() or (last.startswith("0x") and _is_hex(last[2:])):
        # 127.1, 2130706433, 0x7f000001, 127.0.0.0x1: legacy numeric forms that
        # inet_aton still reads as addresses, never a name (no top-level domain is numeric).
        return False
    for label in labels:
        if not 1 <= len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c.isalnum() or c == "-" for c in label) or not label.isascii():
            return False
    return True


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
