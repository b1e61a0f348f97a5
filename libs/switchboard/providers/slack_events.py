"""Slack's Events API, inbound: the envelope (``url_verification``, ``event_callback``),
which message events are a person's reply in a thread we started (`agent_reply`), and the
``message:agent`` activities such a reply makes (`reply_activities`), its mrkdwn made
readable (`from_mrkdwn`).

Thread ids are kept as ``"{channel id}:{ts}"`` (see `thread_key`): a ts is unique only
within its channel, and inbound events name the channel by id.
"""

from __future__ import annotations

import re

import msgspec
from msgspec import Struct, field

from switchboard import jsonsafe
from switchboard.ids import activity_id
from switchboard.model import (
    Activity,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
)

__all__ = [
    "Envelope",
    "MessageEvent",
    "agent_reply",
    "from_mrkdwn",
    "parse_envelope",
    "reply_activities",
    "split_thread",
    "thread_key",
]

RETRY_NUM_HEADER = "x-slack-retry-num"

# Our own limits (model.py): activity text and sender fields.
_TEXT_MAX = 16384
_SENDER_MAX = 256

# Message subtypes that are still a person writing (a reply also sent to the channel,
# a message with files); every other subtype (bot_message, message_changed,
# message_deleted, channel_join, …) is not an agent's answer.
HUMAN_SUBTYPES = frozenset({"thread_broadcast", "file_share"})


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
