"""Slack (an Agent channel), the pure half: request signatures, Events API parsing,
Web API request bodies and answers. No sockets here; the plugin does the I/O.

- Inbound (Events API): ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
  "v0:{X-Slack-Request-Timestamp}:{raw body}")>`` with a replay window; a human reply in a
  thread we started becomes a ``message:agent`` activity for that thread's conversation.
- Outbound (Web API): ``chat.postMessage`` with Block Kit; Slack answers HTTP 200 with
  ``{"ok": false, "error": "..."}`` for most failures, so the body, not only the status,
  decides whether a send is retried, failed for good or done.
- Provisioning: ``oauth.v2.access`` (the OAuth code exchange) and ``auth.test``.

Thread ids are kept as ``"{channel id}:{ts}"`` (see `thread_key`): a ts is unique only
within its channel, and inbound events name the channel by id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct, field

from switchboard import jsonsafe
from switchboard.errors import BadRequest, Unauthorized, Unavailable
from switchboard.ids import activity_id
from switchboard.model import (
    Activity,
    Button,
    CardMessage,
    CarouselMessage,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
)
from switchboard.retry import Outcome

__all__ = [
    "PERMANENT_ERRORS",
    "RETRY_ERRORS",
    "AuthTest",
    "Envelope",
    "MessageEvent",
    "OAuthResult",
    "PostResult",
    "agent_reply",
    "blocks_for",
    "fallback_text",
    "from_mrkdwn",
    "oauth_access_form",
    "parent_request",
    "parse_auth_test",
    "parse_envelope",
    "parse_oauth_response",
    "parse_post_response",
    "reply_activities",
    "sign",
    "split_thread",
    "thread_key",
    "thread_request",
    "to_mrkdwn",
    "verify_request",
]

SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
RETRY_NUM_HEADER = "x-slack-retry-num"
VERSION = "v0"
DEFAULT_TOLERANCE_S = 300
DEFAULT_CHANNEL = "general"

# "v0=" + 64 hex digits; anything much longer is not Slack.
_MAX_SIGNATURE_CHARS = 128
_TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")

# Slack's limits: a section's text is at most 3000 characters, a message at most 50 blocks.
SECTION_CHARS = 3000
MAX_BLOCKS = 50
FALLBACK_CHARS = 4000
# Our own limits (model.py): activity text and sender fields.
_TEXT_MAX = 16384
_SENDER_MAX = 256

# `{"ok": false, "error": ...}` codes worth another attempt; the rest never succeed.
RETRY_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "team_added_to_org",
})
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "token_expired", "no_permission", "missing_scope",
    "msg_too_long", "no_text", "invalid_blocks", "restricted_action", "thread_not_found",
})

# Message subtypes that are still a person writing (a reply also sent to the channel,
# a message with files); every other subtype (bot_message, message_changed,
# message_deleted, channel_join, …) is not an agent's answer.
HUMAN_SUBTYPES = frozenset({"thread_broadcast", "file_share"})


# ---- inbound: signatures ----------------------------------------------------------


def sign(signing_secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value Slack sends for `body` at `timestamp`."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


def verify_request(
    signing_secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Check Slack's signature over the raw body; raise Unauthorized if it does not hold.

    The timestamp must be within `tolerance_s` of `now_s` (a replayed request is refused)
    and the comparison is constant-time.
    """
    if not signing_secret:
        raise Unauthorized("slack_not_configured",
                           "Slack requests cannot be verified: no signing secret is set")
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise Unauthorized("missing_signature",
                           "X-Slack-Signature and X-Slack-Request-Timestamp are required")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise Unauthorized("invalid_timestamp", "X-Slack-Request-Timestamp is not a number")
    if abs(now_s - int(timestamp)) > tolerance_s:
        raise Unauthorized("stale_timestamp",
                           "X-Slack-Request-Timestamp is outside the replay window")
    if len(signature) > _MAX_SIGNATURE_CHARS:
        raise Unauthorized("invalid_signature", "the Slack signature does not match")
    expected = sign(signing_secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode(errors="replace")):
        raise Unauthorized("invalid_signature", "the Slack signature does not match")


# ---- inbound: Events API ----------------------------------------------------------


class SlackFile(Struct, omit_defaults=True):
    id: str | None = None
    name: str | None = None
    title: str | None = None
    mimetype: str | None = None
    url_private: str | None = None
    permalink: str | None = None
    permalink_public: str | None = None


class UserProfile(Struct, omit_defaults=True):
    display_name: str | None = None
    real_name: str | None = None
    name: str | None = None


class MessageEvent(Struct, omit_defaults=True):
    """A ``message`` event, only the fields we use (Slack sends many more)."""

    type: str
    subtype: str | None = None
    channel: str | None = None
    user: str | None = None
    text: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    bot_id: str | None = None
    team: str | None = None
    files: list[SlackFile] = field(default_factory=list)
    user_profile: UserProfile | None = None


class Authorization(Struct, omit_defaults=True):
    team_id: str | None = None


class Envelope(Struct, omit_defaults=True):
    """The Events API body: ``url_verification`` or ``event_callback`` (and others).

    `event` stays raw: its shape depends on its type, and only messages concern us.
    """

    type: str
    challenge: str | None = None
    team_id: str | None = None
    api_app_id: str | None = None
    event_id: str | None = None
    event_time: int | None = None
    event: msgspec.Raw = msgspec.Raw()  # empty when absent
    authorizations: list[Authorization] = field(default_factory=list)

    @property
    def team(self) -> str | None:
        """The workspace the event belongs to (what integrations are routed by)."""
        if self.team_id:
            return self.team_id
        for auth in self.authorizations:
            if auth.team_id:
                return auth.team_id
        return None


_envelope_decoder = msgspec.json.Decoder(Envelope)
_message_decoder = msgspec.json.Decoder(MessageEvent)


def parse_envelope(body: bytes) -> Envelope:
    """Decode an Events API body (after its signature was checked)."""
    return jsonsafe.decode(body, _envelope_decoder, invalid="invalid_event")


def agent_reply(env: Envelope, *, bot_user_id: str | None = None) -> MessageEvent | None:
    """The message event if `env` is a person's reply in a thread, else None.

    Not a reply: other event types, top-level messages, the thread parent itself, edits,
    deletions, joins, and anything a bot or app wrote (our own posts included).
    """
    if env.type != "event_callback" or not env.event or not env.event_id:
        return None
    try:
        event = _message_decoder.decode(env.event)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if event.type != "message":
        return None
    if event.subtype is not None and event.subtype not in HUMAN_SUBTYPES:
        return None
    if event.bot_id or not event.user or (bot_user_id and event.user == bot_user_id):
        return None
    if not event.channel or not event.ts or not event.thread_ts or event.thread_ts == event.ts:
        return None
    return event


def thread_key(channel: str, ts: str) -> str:
    """How a Slack thread is recorded on a conversation: ``"{channel id}:{thread ts}"``."""
    return f"{channel}:{ts}"


def split_thread(key: str) -> tuple[str, str] | None:
    """(channel, ts) of a `thread_key`; None if `key` is not one."""
    channel, sep, ts = key.partition(":")
    if not sep or not channel or not ts:
        return None
    return channel, ts


_ENTITY_RE = re.compile(r"<([^<>]*)>")


def _plain_entity(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@") or target.startswith("#"):
        # <@U123|name>, <#C123|general>
        return (target[0] + label) if label else target
    if target.startswith("!"):
        # <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>
        if label:
            return label
        return "@" + target[1:].split("^", 1)[0]
    if target.startswith("mailto:"):
        return label or target.removeprefix("mailto:")
    if label and label != target:
        return f"{label} ({target})"
    return target


def from_mrkdwn(text: str) -> str:
    """Slack's message text as a customer should read it: links spelled out, mentions
    and channel references readable, ``&amp; &lt; &gt;`` decoded."""
    plain = _ENTITY_RE.sub(_plain_entity, text)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _sender_name(event: MessageEvent) -> str | None:
    profile = event.user_profile
    if profile is None:
        return None
    name = profile.display_name or profile.real_name or profile.name
    return name[:_SENDER_MAX] if name else None


def _file_message(f: SlackFile) -> Message | None:
    # A public permalink opens for anyone; url_private needs the bot token (see README).
    url = f.permalink_public or f.url_private or f.permalink
    if not url or not url.startswith(("https://", "http://")) or len(url) > 2048:
        return None
    name = f.title or f.name
    if (f.mimetype or "").startswith("image/"):
        return ImageMessage(url=url, caption=name)
    return FileMessage(url=url, name=f.name or f.title, mime_type=f.mimetype)


def reply_activities(
    *,
    hub_id: str,
    integration_id: str,
    conversation_id: str,
    env: Envelope,
    event: MessageEvent,
    now_ms: int,
) -> list[Activity]:
    """The ``message:agent`` activities an agent's thread reply makes: its text, then one
    per attached file. Ids derive from Slack's ``event_id`` and the message ``ts``, so a
    redelivered event gives the same activities."""
    assert env.event_id and event.user and event.ts and event.channel
    messages: list[Message] = []
    text = from_mrkdwn(event.text or "").strip()
    if text:
        messages.append(TextMessage(text=text[:_TEXT_MAX]))
    for f in event.files:
        m = _file_message(f)
        if m is not None:
            messages.append(m)
    metadata = {"slackChannel": event.channel, "slackTs": event.ts,
                "slackThreadTs": event.thread_ts or ""}
    team = env.team
    if team:
        metadata["slackTeam"] = team
    sender = Sender(id=event.user[:_SENDER_MAX], name=_sender_name(event))
    base = f"{env.event_id}:{event.ts}"
    return [
        Activity(
            activity_id=activity_id(integration_id, base if i == 0 else f"{base}:{i}"),
            hub_id=hub_id,
            integration_id=integration_id,
            channel_id="Slack",
            type="message:agent",
            conversation_id=conversation_id,
            sender=sender,
            timestamp=now_ms,
            message=m,
            metadata=metadata,
        )
        for i, m in enumerate(messages)
    ]


# ---- outbound: chat.postMessage ---------------------------------------------------


def to_mrkdwn(text: str) -> str:
    """Text shown literally in Slack: only ``& < >`` are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, label: str) -> str:
    safe_url = url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
    return f"<{safe_url}|{to_mrkdwn(label).replace('|', '¦')}>"


def _chunks(escaped: str, size: int = SECTION_CHARS) -> list[str]:
    """Split mrkdwn into pieces of at most `size`, never inside an ``&amp;``-style entity."""
    out: list[str] = []
    rest = escaped
    while len(rest) > size:
        cut = size
        amp = rest.rfind("&", cut - 5, cut)
        if amp != -1 and ";" not in rest[amp:cut]:
            cut = amp
        out.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        out.append(rest)
    return out


def _sections(mrkdwn: str) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for piece in _chunks(mrkdwn)]


def _context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn[:SECTION_CHARS]}]}


def _card_lines(title: str, subtitle: str | None, image_url: str | None,
                buttons: list[Button]) -> str:
    lines = [f"*{to_mrkdwn(title)}*"]
    if subtitle:
        lines.append(to_mrkdwn(subtitle))
    if image_url:
        lines.append(_link(image_url, "image"))
    for b in buttons:
        if b.type == "url" and b.url:
            lines.append("• " + _link(b.url, b.title))
        else:
            lines.append("• " + to_mrkdwn(b.title))
    return "\n".join(lines)


def blocks_for(message: Message) -> list[dict[str, Any]]:
    """Block Kit for a hub message. Media are links (Slack previews what it can fetch;
    an image block whose URL Slack cannot fetch would fail the whole post)."""
    blocks: list[dict[str, Any]]
    if isinstance(message, TextMessage):
        blocks = _sections(to_mrkdwn(message.text)) if message.text.strip() else []
        if message.quick_replies:
            choices = " · ".join(to_mrkdwn(q.title) for q in message.quick_replies)
            blocks.append(_context(f"Quick replies: {choices}"))
    elif isinstance(message, ImageMessage):
        blocks = _sections(":frame_with_picture: " + _link(message.url,
                                                           message.caption or "Image"))
    elif isinstance(message, FileMessage):
        label = message.name or "File"
        kind = f" ({to_mrkdwn(message.mime_type)})" if message.mime_type else ""
        blocks = _sections(":paperclip: " + _link(message.url, label) + kind)
    elif isinstance(message, CardMessage):
        blocks = _sections(_card_lines(message.title, message.subtitle, message.image_url,
                                       message.buttons))
    else:
        assert isinstance(message, CarouselMessage)
        blocks = []
        for i, card in enumerate(message.cards):
            if i:
                blocks.append({"type": "divider"})
            blocks.extend(_sections(_card_lines(card.title, card.subtitle, card.image_url,
                                                card.buttons)))
    return blocks


def fallback_text(message: Message) -> str:
    """A plain one-line form of `message` (notifications, screen readers, old clients)."""
    if isinstance(message, TextMessage):
        text = message.text
        if message.quick_replies:
            text += " [" + " | ".join(q.title for q in message.quick_replies) + "]"
    elif isinstance(message, ImageMessage):
        text = f"Image: {message.caption + ' ' if message.caption else ''}{message.url}"
    elif isinstance(message, FileMessage):
        text = f"File: {message.name + ' ' if message.name else ''}{message.url}"
    elif isinstance(message, CardMessage):
        text = f"Card: {message.title}" + (f" — {message.subtitle}" if message.subtitle else "")
    else:
        assert isinstance(message, CarouselMessage)
        text = "Cards: " + ", ".join(c.title for c in message.cards)
    return to_mrkdwn(text)[:FALLBACK_CHARS]


def _who(sender: Sender) -> str:
    if sender.name and sender.name != sender.id:
        return f"*{to_mrkdwn(sender.name)}* ({to_mrkdwn(sender.id)})"
    return f"*{to_mrkdwn(sender.id)}*"


def _role(activity: Activity) -> str:
    return activity.type.split(":", 1)[1] if ":" in activity.type else activity.type


def _body(activity: Activity) -> tuple[list[dict[str, Any]], str]:
    assert activity.message is not None
    return blocks_for(activity.message), fallback_text(activity.message)


def parent_request(
    channel: str,
    activity: Activity,
    *,
    source_channel: str,
    source_name: str | None,
) -> dict[str, Any]:
    """The message that opens a conversation's thread in `channel`: who wrote, through
    which channel (integration), and the first message itself."""
    blocks, text = _body(activity)
    where = to_mrkdwn(source_channel) + (f" · _{to_mrkdwn(source_name)}_" if source_name
                                         else "")
    header = f"{_who(activity.sender)} · {where}"
    if _role(activity) != "customer":
        header += f" · {to_mrkdwn(_role(activity))}"
    context = {"type": "context", "elements": [
        {"type": "mrkdwn", "text": header[:SECTION_CHARS]},
        {"type": "mrkdwn", "text": f"conversation `{to_mrkdwn(activity.conversation_id)}`"},
    ]}
    plain_who = activity.sender.name or activity.sender.id
    return {
        "channel": channel,
        "text": to_mrkdwn(f"{plain_who} via {source_channel}: ")[:200] + text,
        "blocks": [context, *blocks][:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": True,
    }


def thread_request(channel: str, thread_ts: str, activity: Activity) -> dict[str, Any]:
    """A later message of the conversation, posted in its thread."""
    blocks, text = _body(activity)
    if _role(activity) != "customer":
        who = activity.sender.name or activity.sender.id
        blocks = [_context(f"*{to_mrkdwn(who)}* · {to_mrkdwn(_role(activity))}"), *blocks]
    return {
        "channel": channel,
        "thread_ts": thread_ts,
        "text": text,
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": True,
    }


class PostResult(Struct, frozen=True, kw_only=True):
    """What one ``chat.postMessage`` call came to."""

    outcome: Outcome
    reason: str
    status: int
    retry_after: float | None = None
    channel: str | None = None
    ts: str | None = None


class _PostAnswer(Struct):
    ok: bool = False
    error: str | None = None
    channel: str | None = None
    ts: str | None = None


_post_decoder = msgspec.json.Decoder(_PostAnswer)


def _error_outcome(error: str) -> Outcome:
    if error in RETRY_ERRORS:
        return Outcome.RETRY
    # Unknown codes are treated as permanent too: Slack documents its transient
    # failures (ratelimited, internal_error, …), everything else is a request problem.
    return Outcome.PERMANENT


def parse_post_response(status: int, body: bytes, retry_after: float | None) -> PostResult:
    """Classify a Web API answer. 429 and 5xx retry (honouring Retry-After); a 200 with
    ``ok: false`` retries for Slack's transient errors and fails for good otherwise."""
    if status == 429 or status >= 500 or status in (408, 425):
        return PostResult(outcome=Outcome.RETRY, reason="slack_ratelimited" if status == 429
                          else f"http_{status}", status=status, retry_after=retry_after)
    if not 200 <= status < 300:
        return PostResult(outcome=Outcome.PERMANENT, reason=f"http_{status}", status=status)
    try:
        answer = jsonsafe.decode(body, _post_decoder)
    except BadRequest:
        return PostResult(outcome=Outcome.RETRY, reason="slack_invalid_response", status=status)
    if not answer.ok:
        error = (answer.error or "unknown_error")[:64]
        return PostResult(outcome=_error_outcome(error), reason=f"slack_{error}", status=status,
                          retry_after=retry_after)
    if not answer.ts or not answer.channel:
        return PostResult(outcome=Outcome.RETRY, reason="slack_invalid_response", status=status)
    return PostResult(outcome=Outcome.DELIVERED, reason="sent", status=status,
                      channel=answer.channel, ts=answer.ts)


# ---- provisioning: oauth.v2.access, auth.test -----------------------------------------


def oauth_access_form(code: str, client_id: str, client_secret: str,
                      redirect_uri: str | None = None) -> dict[str, str]:
    """The form body of ``oauth.v2.access`` (client credentials in the body)."""
    form = {"code": code, "client_id": client_id, "client_secret": client_secret}
    if redirect_uri:
        form["redirect_uri"] = redirect_uri
    return form


class _Team(Struct):
    id: str
    name: str | None = None


class _AuthedUser(Struct):
    id: str | None = None
    access_token: str | None = None


class _OAuthAnswer(Struct):
    ok: bool = False
    error: str | None = None
    access_token: str | None = None
    token_type: str | None = None
    bot_user_id: str | None = None
    app_id: str | None = None
    team: _Team | None = None
    authed_user: _AuthedUser | None = None


class OAuthResult(Struct, frozen=True, kw_only=True):
    bot_access_token: str
    team_id: str
    team_name: str | None = None
    bot_user_id: str | None = None
    app_id: str | None = None
    user_access_token: str | None = None


_oauth_decoder = msgspec.json.Decoder(_OAuthAnswer)


def _provider_unavailable(what: str, status: int) -> Unavailable:
    return Unavailable("slack_unavailable", f"Slack {what} failed (HTTP {status}); retry later")


def parse_oauth_response(status: int, body: bytes) -> OAuthResult:
    """The installation an ``oauth.v2.access`` answer grants; BadRequest with Slack's own
    error (``invalid_code``, ``code_already_used``, ``bad_client_secret``…) if refused."""
    if status == 429 or status >= 500:
        raise _provider_unavailable("oauth.v2.access", status)
    try:
        answer = jsonsafe.decode(body, _oauth_decoder)
    except BadRequest:
        raise _provider_unavailable("oauth.v2.access", status) from None
    if not answer.ok:
        error = (answer.error or f"http_{status}")[:64]
        raise BadRequest("slack_oauth_failed", f"Slack refused the OAuth code: {error}",
                         "configuration.code")
    if not answer.access_token or answer.team is None:
        raise BadRequest("slack_oauth_failed",
                         "Slack granted no bot token: the app must request bot scopes",
                         "configuration.code")
    user = answer.authed_user
    return OAuthResult(
        bot_access_token=answer.access_token,
        team_id=answer.team.id,
        team_name=answer.team.name,
        bot_user_id=answer.bot_user_id,
        app_id=answer.app_id,
        user_access_token=user.access_token if user is not None else None,
    )


class AuthTest(Struct, frozen=True, kw_only=True):
    team_id: str
    user: str | None = None  # the bot user's name
    user_id: str | None = None
    bot_id: str | None = None


class _AuthTestAnswer(Struct):
    ok: bool = False
    error: str | None = None
    team_id: str | None = None
    user: str | None = None
    user_id: str | None = None
    bot_id: str | None = None


_auth_test_decoder = msgspec.json.Decoder(_AuthTestAnswer)


def parse_auth_test(status: int, body: bytes) -> AuthTest:
    """Who a token belongs to (``auth.test``); BadRequest if Slack refuses the token."""
    if status == 429 or status >= 500:
        raise _provider_unavailable("auth.test", status)
    try:
        answer = jsonsafe.decode(body, _auth_test_decoder)
    except BadRequest:
        raise _provider_unavailable("auth.test", status) from None
    if not answer.ok or not answer.team_id:
        error = (answer.error or f"http_{status}")[:64]
        raise BadRequest("slack_auth_failed", f"Slack refused the bot token: {error}",
                         "configuration.botAccessToken")
    return AuthTest(team_id=answer.team_id, user=answer.user, user_id=answer.user_id,
                    bot_id=answer.bot_id)
