"""PocketPing: live chat for your website, served by your own Python app.

from pocketping import PocketPing

pp = PocketPing(welcome_message="Hi! How can we help?")
app.mount("/pocketping", pp.asgi_app)
"""

__version__ = "0.1.0"

from .ai import AIResponder  # noqa: E402
from .bans import Ban  # noqa: E402
from .bridges import DiscordBridge, SlackBridge, TelegramBridge  # noqa: E402
from .bridges.base import Bridge  # noqa: E402
from .chat import ChatListener, ChatService  # noqa: E402
from .core import PocketPing  # noqa: E402
from .errors import (  # noqa: E402
    AttachmentNotFound,
    AuthError,
    BridgeError,
    DeliveryError,
    Forbidden,
    InvalidInput,
    MessageNotFound,
    PocketPingError,
    RateLimited,
    SessionNotFound,
    StorageCapabilityError,
    StorageError,
    TemporaryDeliveryError,
)
from .files import LocalFileStore  # noqa: E402
from .hours import BusinessHours  # noqa: E402
from .mail import EmailNotifier  # noqa: E402  (aiosmtplib is imported on construction)
from .models import Attachment, Event, Message, Session  # noqa: E402
from .policy import IpFilter, UaFilter, identity_hash  # noqa: E402
from .ratelimits import RateLimits  # noqa: E402
from .realtime.brokers import PostgresBroker, RedisBroker  # noqa: E402  (extras imported on construction)
from .realtime.hub import Broker  # noqa: E402
from .retention import Removed  # noqa: E402
from .storage import BaseStorage, MemoryStorage, SQLiteStorage  # noqa: E402
from .storage.base import StorageAdapter  # noqa: E402
from .storage.postgres import PostgresStorage  # noqa: E402  (psycopg is imported on construction)
from .webhooks import WebhookEndpoint, WebhookVerificationError, new_webhook_secret, verify_webhook  # noqa: E402

__all__ = [
    "AIResponder",
    "Attachment",
    "AttachmentNotFound",
    "AuthError",
    "Ban",
    "BaseStorage",
    "Bridge",
    "BridgeError",
    "Broker",
    "BusinessHours",
    "ChatListener",
    "ChatService",
    "DeliveryError",
    "DiscordBridge",
    "EmailNotifier",
    "Event",
    "Forbidden",
    "InvalidInput",
    "IpFilter",
    "LocalFileStore",
    "MemoryStorage",
    "Message",
    "MessageNotFound",
    "PocketPing",
    "PocketPingError",
    "PostgresBroker",
    "PostgresStorage",
    "RateLimited",
    "RateLimits",
    "RedisBroker",
    "Removed",
    "SQLiteStorage",
    "Session",
    "SessionNotFound",
    "SlackBridge",
    "StorageAdapter",
    "StorageCapabilityError",
    "StorageError",
    "TelegramBridge",
    "TemporaryDeliveryError",
    "UaFilter",
    "WebhookEndpoint",
    "WebhookVerificationError",
    "__version__",
    "identity_hash",
    "new_webhook_secret",
    "verify_webhook",
]
