"""Slack channel (issue #4): being built."""

from __future__ import annotations

from switchboard.model import ChannelId
from switchboard.services.channels.base import ChannelPlugin


class SlackPlugin(ChannelPlugin):
    channel = ChannelId.SLACK
