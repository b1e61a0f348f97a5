"""TwilioSMS request signatures: webhooks are form-encoded POSTs signed with
``X-Twilio-Signature`` = base64 HMAC-SHA1(auth token, full URL + every parameter name and
value, sorted by name). When a Twilio *Webhook Rule* matches the URL, Twilio signs with a
SharedKey secret instead and names the algorithm (HMAC_SHA1 or HMAC_SHA256) in
``X-Twilio-Webhooks-Signature-Settings``.

Here: the form as Twilio sent it (`parse_form`), the URL as it signed it (`full_url`),
and the signature made (`compute_signature`) and checked (`verify_signature`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from switchboard.errors import BadRequest, Forbidden, Unauthorized

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_HASHES: dict[str, Callable[[], Any]] = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}

# Bounds on what we read from a webhook, well above anything Twilio sends.
MAX_PARAMS = 200

Params = list[tuple[str, str]]


def full_url(public_url: str, path: str, query: str) -> str:
    """The URL Twilio requested, as it signed it: the public base (not the bind address,
    which differs behind a proxy), the request path, and the raw query string."""
    url = public_url.rstrip("/") + path
    return f"{url}?{query}" if query else url


def parse_form(body: bytes) -> Params:
    """The parameters of a form-encoded body, in order, repeated names kept."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("invalid_form", "the body is not UTF-8") from None
    try:
        params = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                           max_num_fields=MAX_PARAMS)
    except ValueError:
        raise BadRequest("invalid_form", f"more than {MAX_PARAMS} form fields") from None
    return params


def compute_signature(secret: str, url: str, params: Sequence[tuple[str, str]],
                      algorithm: str = HMAC_SHA1) -> str:
    """Twilio's signature: URL, then for each distinct name in sorted order, name+value
    for each of its distinct values in sorted order; HMAC with `secret`, base64."""
    hash_function = _HASHES.get(algorithm.upper())
    if hash_function is None:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values)
                         for value in sorted(values[name]))
    mac = hmac.new(secret.encode("utf-8"), data.encode("utf-8"), hash_function)
    return base64.b64encode(mac.digest()).decode("ascii")


def signature_algorithm(settings_header: str | None) -> str:
    """The algorithm named by ``X-Twilio-Webhooks-Signature-Settings`` (absent: HMAC_SHA1)."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def _url_variants(url: str) -> list[str]:
    # Twilio is not consistent about the default port in what it signs: check both.
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return [url]
    host = parts.netloc if port is None else parts.netloc.rsplit(":", 1)[0]
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    without = urlunsplit(parts._replace(netloc=host))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    return list(dict.fromkeys([url, without, with_port]))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def verify_signature(headers: Mapping[str, str], url: str, params: Sequence[tuple[str, str]],
                     *, auth_token: str, shared_key: str | None = None) -> None:
    """Check ``X-Twilio-Signature`` over `url` and `params`, constant time.

    Missing signature → Unauthorized (401); wrong one → Forbidden (403). A request signed
    with a SharedKey (the settings header present) needs `shared_key`.
    """
    signature = (_header(headers, SIGNATURE_HEADER) or "").strip()
    if not signature:
        raise Unauthorized("missing_signature", "X-Twilio-Signature header is required")
    settings = _header(headers, SIGNATURE_SETTINGS_HEADER)
    if settings is not None and settings.strip():
        algorithm = signature_algorithm(settings)
        if shared_key is None:
            raise Forbidden("shared_key_not_configured",
                            "the request is signed with a Twilio SharedKey; set the "
                            "integration's sharedKeySecret")
        secret = shared_key
    else:
        algorithm, secret = HMAC_SHA1, auth_token
    if algorithm not in _HASHES:
        raise Forbidden("unsupported_signature_algorithm",
                        f"unsupported signature algorithm {algorithm[:32]!r}")
    given = signature.encode("utf-8", errors="replace")
    ok = False
    for candidate in _url_variants(url):
        expected = compute_signature(secret, candidate, params, algorithm).encode("ascii")
        ok |= hmac.compare_digest(expected, given)
    if not ok:
        raise Forbidden("invalid_signature", "X-Twilio-Signature does not match")
