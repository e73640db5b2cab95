"""Chat-app bridges: operators answer visitors from Telegram, Slack or Discord.

pp = PocketPing(bridges=[TelegramBridge.from_env(), SlackBridge.from_env(), DiscordBridge.from_env()])
"""

from .base import Bridge, TemporaryBridgeError
from .discord import DiscordBridge
from .slack import SlackBridge
from .telegram import TelegramBridge

__all__ = ["Bridge", "DiscordBridge", "SlackBridge", "TelegramBridge", "TemporaryBridgeError"]
