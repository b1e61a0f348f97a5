"""The Slack install's ``state``, as Hubster defines it: UNIX time + the client secret. Pure.

The portal that sent the user to Slack's "Add to Slack" page made ``state`` as the current
UNIX time (seconds; milliseconds, as JavaScript's ``Date.now()`` gives, are accepted too)
followed directly by the app's client secret. The hub accepts a create only with a state
that ends with its own client secret and whose time is within the window, so a code
captured from a redirect cannot be installed later or by someone without the secret.
Errors never repeat the state or any part of the secret.
"""

from __future__ import annotations

import hmac

from switchboard.errors import BadRequest

__all__ = ["check_state"]

FIELD = "configuration.state"
# Seconds since 1970 have 10 digits until 2286; milliseconds 13.
_MAX_TIME_DIGITS = 13
_MS_THRESHOLD = 10**11


def check_state(state: object, client_secret: str, *, now_s: float, window_s: float) -> None:
    """BadRequest unless `state` is a time within `window_s` of `now_s` followed by
    `client_secret`: ``missing_state``, ``invalid_state`` (malformed or another secret) or
    ``stale_state`` (outside the window)."""
    if state is None or state == "":
        raise BadRequest("missing_state", "state is required with an OAuth code: the UNIX "
                         "time followed by the Slack app's client secret", FIELD)
    secret = client_secret.encode()
    given = state.encode("utf-8", "surrogatepass") if isinstance(state, str) else b""
    head, tail = given[:-len(secret)] if len(given) > len(secret) else b"", given[-len(secret):]
    # Constant time over the secret's part; the time part is public.
    same = hmac.compare_digest(tail, secret) if secret else False
    if not same or not head.isdigit() or len(head) > _MAX_TIME_DIGITS:
        raise BadRequest("invalid_state", "state is not the UNIX time followed by this hub's "
                         "Slack client secret", FIELD)
    at = int(head)
    if at >= _MS_THRESHOLD:
        at //= 1000
    if abs(now_s - at) > window_s:
        raise BadRequest("stale_state", f"state is more than {window_s:g} seconds "
                         + ("old" if at < now_s else "in the future"), FIELD)
