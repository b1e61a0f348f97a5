"""Provider channels (TwilioSMS, Messenger, WebChat, Slack, Syncro) as plugins of the
core."""

from __future__ import annotations

from switchboard.model import ChannelId
from switchboard.services.channels.base import ChannelPlugin
from switchboard.services.runtime import Runtime


def load_plugins(runtime: Runtime) -> dict[ChannelId, ChannelPlugin]:
    """One plugin instance per provider channel, sharing `runtime`."""
    from switchboard.services.channels.messenger import MessengerPlugin
    from switchboard.services.channels.slack import SlackPlugin
    from switchboard.services.channels.syncro import SyncroPlugin
    from switchboard.services.channels.twilio import TwilioPlugin
    from switchboard.services.channels.webchat import WebChatPlugin

    plugins: list[ChannelPlugin] = [
        TwilioPlugin(runtime), MessengerPlugin(runtime), WebChatPlugin(runtime),
        SlackPlugin(runtime), SyncroPlugin(runtime),
    ]
    return {p.channel: p for p in plugins}
