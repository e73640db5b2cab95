"""Chat-app bridges: operators answer visitors from Telegram, Slack or Discord.

pp = PocketPing(bridges=[TelegramBridge.from_env()])
"""

from .base import Bridge, TemporaryBridgeError
from .telegram import TelegramBridge

__all__ = ["Bridge", "TelegramBridge", "TemporaryBridgeError"]
