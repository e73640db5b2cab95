"""Exceptions raised by PocketPing.

PocketPingError
├── InvalidInput (also a ValueError)   bad arguments or request bodies
├── SessionNotFound (also a LookupError)
├── MessageNotFound (also a LookupError)
├── Forbidden                           e.g. editing someone else's message
├── RateLimited                         over a rate limit; carries ``.retry_after`` (s)
├── StorageError
│   └── StorageCapabilityError          the storage lacks an optional method
├── DeliveryError                       an outbox job refused for good
│   ├── TemporaryDeliveryError          ... or to be retried (``.retry_after``)
│   └── BridgeError                     carries ``.bridge``
└── AuthError                           a console or bridge-callback request failed verification
"""

from __future__ import annotations

from typing import Any


class PocketPingError(Exception):
    """Root of every error raised by PocketPing."""

    status_code = 500
    code = "internal_error"


class InvalidInput(PocketPingError, ValueError):
    status_code = 400
    code = "invalid_input"


class SessionNotFound(PocketPingError, LookupError):
    status_code = 404
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session with id {session_id!r}")
        self.session_id = session_id


class MessageNotFound(PocketPingError, LookupError):
    status_code = 404
    code = "message_not_found"

    def __init__(self, message_id: str) -> None:
        super().__init__(f"no message with id {message_id!r} in this session")
        self.message_id = message_id


class AttachmentNotFound(PocketPingError, LookupError):
    """No finished attachment with this id (never uploaded, unfinished, or erased)."""

    status_code = 404
    code = "not_found"

    def __init__(self, attachment_id: str) -> None:
        super().__init__("no such attachment")
        self.attachment_id = attachment_id


class Forbidden(PocketPingError):
    status_code = 403
    code = "forbidden"


class RateLimited(PocketPingError):
    """A client went over one of its :class:`~pocketping.RateLimits`; ``retry_after``: whole
    seconds until it may try again (the ``Retry-After`` header of the 429)."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(PocketPingError):
    code = "storage_error"


class StorageCapabilityError(StorageError):
    """The configured storage does not implement optional methods a call needs; ``methods``
    names them (``method``: the first)."""

    status_code = 501
    code = "storage_capability_missing"

    def __init__(self, storage: object, method: str | list[str] | tuple[str, ...], needed_for: str) -> None:
        methods = [method] if isinstance(method, str) else list(method)
        names = ", ".join(f"{m}()" for m in methods)
        what = "method" if len(methods) == 1 else "methods"
        super().__init__(
            f"{type(storage).__name__} has no {names} {what}, which {needed_for} needs; "
            f"add {'it' if len(methods) == 1 else 'them'} to your storage class or use a built-in storage"
        )
        self.methods = methods
        self.method = methods[0]


class DeliveryError(PocketPingError):
    """An outbox job its destination refuses for good (kept as dead, not retried)."""

    code = "delivery_error"


class TemporaryDeliveryError(DeliveryError):
    """An outbox job that may work later (network error, 5xx, 429): retried after the
    destination's delay, or ``retry_after`` seconds when the other side said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BridgeError(DeliveryError):
    code = "bridge_error"

    def __init__(self, message: str, *, bridge: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.bridge = bridge


class AuthError(PocketPingError):
    status_code = 401
    code = "unauthorized"
