"""Signed webhooks: what happens in conversations, POSTed to your endpoints through the outbox.

``PocketPing(webhook_url=..., webhook_secret=...)`` for one endpoint, or
``webhooks=[WebhookEndpoint(url=..., secret=..., events=[...])]`` for several. Each event is
``{"id", "type", "timestamp", "data"}`` (the Standard Webhooks shape), written to the outbox
before the caller is answered and delivered in order per session and endpoint, with the same
``webhook-id`` on every retry. Requests are signed two ways: the Standard Webhooks headers
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` keyed with the base64-decoded ``whsec_`` secret) and
``X-PocketPing-Signature: sha256=<hex HMAC-SHA256 of the body keyed with the secret as
given>``. :func:`verify_webhook` checks both, for your receivers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from .chat import ChatListener
from .errors import AuthError, InvalidInput, TemporaryDeliveryError
from .models import Event, Message, Session, compact_json, iso, new_id
from .outbox import Destination
from .protocol import load_object
from .stats import reply_source

if TYPE_CHECKING:
    from .outbox import Outbox

log = logging.getLogger("pocketping.webhooks")

EVENTS = (
    "session.started",
    "session.closed",
    "message.created",
    "message.edited",
    "message.deleted",
    "event.received",
    "visitor.identified",
    "csat.submitted",
)
SECRET_PREFIX = "whsec_"
#: Seconds before each retry (with up to 20 % jitter): the first within a minute, then for
#: about three days in all; after the last one the job is kept as dead.
RETRY_SCHEDULE: tuple[float, ...] = (5, 60, 300, 1800, 7200, 18000, *(36000,) * 7)
#: How old a signed request may be when verified.
TOLERANCE = 300


class WebhookVerificationError(AuthError):
    """A webhook request whose signatures or timestamp do not check out."""


def new_webhook_secret() -> str:
    """A fresh secret for an endpoint: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: object) -> bytes:
    """The HMAC key of a ``whsec_`` secret; :class:`InvalidInput` saying how to make one."""
    how = "make one with pocketping.new_webhook_secret()"
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidInput(f"a webhook secret is 'whsec_' and base64 (at least 24 random bytes): {how}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"the webhook secret after 'whsec_' is not base64: {how}") from None
    if len(key) < 24:
        raise InvalidInput(f"the webhook secret holds {len(key)} bytes; at least 24 are needed: {how}")
    return key


def signature_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signing headers of one attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    standard = base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()
    plain = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{standard}",
        "X-PocketPing-Signature": f"sha256={plain}",
    }


def verify_webhook(
    body: bytes | str, headers: Mapping[str, str], secret: str, *, tolerance: int = TOLERANCE
) -> dict[str, Any]:
    """The event a webhook request carries, once both signatures (and a timestamp within
    ``tolerance`` seconds) check out; :class:`WebhookVerificationError` otherwise."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    given = {k.lower(): v for k, v in headers.items()}
    webhook_id, stamp = given.get("webhook-id"), given.get("webhook-timestamp")
    if not webhook_id or not stamp or "webhook-signature" not in given or "x-pocketping-signature" not in given:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or a signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time") from None
    if abs(time.time() - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old or too far ahead")
    expected = signature_headers(secret, webhook_id, timestamp, raw)
    wanted = expected["webhook-signature"].encode()
    if not any(hmac.compare_digest(s.encode(), wanted) for s in given["webhook-signature"].split()):
        raise WebhookVerificationError("webhook-signature does not match")
    if not hmac.compare_digest(given["x-pocketping-signature"].encode(), expected["X-PocketPing-Signature"].encode()):
        raise WebhookVerificationError("X-PocketPing-Signature does not match")
    try:
        return load_object(raw)
    except ValueError as exc:
        raise WebhookVerificationError(f"the body is not a JSON object: {exc}") from None


class WebhookEndpoint(Destination):
    """One endpoint: ``url`` (http or https), ``secret`` (``whsec_...``), ``events`` (the
    types it gets; default all), ``timeout`` (seconds per attempt), ``retry_schedule``."""

    logger = "pocketping.webhooks"
    refuser = "the endpoint"

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        events: Iterable[str] | None = None,
        timeout: float = 10.0,
        retry_schedule: Sequence[float] = RETRY_SCHEDULE,
    ) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"webhook url must be an http(s) URL, not {url!r}")
        secret_key(secret)
        chosen = tuple(EVENTS if events is None else events)
        unknown = [e for e in chosen if e not in EVENTS]
        if unknown or not chosen:
            raise InvalidInput(f"webhook events must be some of {', '.join(EVENTS)}; not {unknown or 'none'}")
        self.url = url
        self.secret = secret
        self.events = frozenset(chosen)
        self.timeout = timeout
        self.retry_schedule = tuple(float(s) for s in retry_schedule)
        # Its line in the outbox: stable across restarts, one per URL.
        self.name = "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:12]
        self._client: httpx.AsyncClient | None = None
        self._outbox: Outbox | None = None
        self._gone = False

    def __repr__(self) -> str:  # the secret stays out of logs
        return f"WebhookEndpoint(url={self.url!r}, events={sorted(self.events)})"

    async def started(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._client = httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, headers={"User-Agent": "pocketping-python"}
        )
        self._gone = await outbox.store.bridge_key_get(f"{self.name}:gone") is not None

    async def stopped(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, job: dict[str, Any]) -> None:
        assert self._outbox is not None and self._client is not None
        store = self._outbox.store
        body_event = job["payload"]["event"]
        done_key = f"{self.name}:done:{body_event['id']}"
        if self._gone or await store.bridge_key_get(done_key) is not None:
            return
        body = compact_json(body_event).encode()
        headers = {
            "Content-Type": "application/json",
            **signature_headers(self.secret, body_event["id"], int(time.time()), body),
        }
        extra = {"session_id": job["session_id"], "bridge": self.name}
        try:
            r = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TemporaryDeliveryError(f"{type(exc).__name__} posting to the webhook endpoint") from None
        if 200 <= r.status_code < 300:
            await store.bridge_key_set(done_key, "1", session_id=job["session_id"])
            return
        if r.status_code == 410:
            self._gone = True
            await store.bridge_key_set(f"{self.name}:gone", iso(datetime.now(UTC)))
            log.error("webhook endpoint %s answered 410 Gone: it is turned off", self.url, extra=extra)
            return
        retry_after = None
        if r.status_code in (429, 503) and r.headers.get("retry-after", "").strip().isdigit():
            retry_after = float(r.headers["retry-after"])
        raise TemporaryDeliveryError(f"the webhook endpoint answered HTTP {r.status_code}", retry_after=retry_after)


class Webhooks(ChatListener):
    """Turns stored changes into webhook events, one outbox job per endpoint that wants them."""

    def __init__(self, outbox: Outbox, endpoints: Sequence[WebhookEndpoint]) -> None:
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise InvalidInput("two webhook endpoints with the same URL")
        self.outbox = outbox
        self.endpoints = list(endpoints)
        for endpoint in self.endpoints:
            outbox.add(endpoint)

    async def emit(
        self, session_id: str, type: str, data: dict[str, Any], *, event_id: str | None = None, missing: bool = False
    ) -> None:
        """Queue the event for every endpoint that wants it; with ``missing`` (recovery), only
        for those that have not delivered ``event_id`` yet."""
        event_id = event_id or new_id("msg")
        event = {"id": event_id, "type": type, "timestamp": iso(datetime.now(UTC)), "data": data}
        for endpoint in self.endpoints:
            if type not in endpoint.events:
                continue
            if missing and await self.outbox.store.bridge_key_get(f"{endpoint.name}:done:{event_id}") is not None:
                continue
            await self.outbox.enqueue(endpoint.name, session_id, "webhook", event_id, {"event": event})

    async def recover(self, session: Session, messages: list[Message]) -> None:
        """``message.created`` of recent messages, for the endpoints that have not had it (the
        event id is the message's, so a job queued twice is delivered once)."""
        for message in messages:
            await self._created(message, missing=True)

    async def _created(self, message: Message, *, missing: bool = False) -> None:
        event_id = "evt_" + message.id.removeprefix("msg_")
        await self.emit(
            message.session_id, "message.created", _message_data(message), event_id=event_id, missing=missing
        )

    async def session_started(self, session: Session) -> None:
        await self.emit(session.id, "session.started", {"session": session.to_wire()})

    async def visitor_message(self, session: Session, message: Message, reopened: bool = False) -> None:
        await self._created(message)

    async def operator_message(self, message: Message) -> None:
        await self._created(message)

    async def message_changed(self, message: Message) -> None:
        kind = "message.deleted" if message.deleted_at is not None else "message.edited"
        await self.emit(message.session_id, kind, _message_data(message))

    async def session_closed(self, session: Session, skip: str | None = None) -> None:
        await self.emit(session.id, "session.closed", {"session": session.to_wire()})

    async def rating_received(self, session: Session, rating: dict[str, Any]) -> None:
        await self.emit(session.id, "csat.submitted", {"sessionId": session.id, "rating": dict(rating)})

    async def event_received(self, session: Session, event: Event) -> None:
        await self.emit(session.id, "event.received", {"sessionId": session.id, "event": event.to_wire()})

    async def visitor_identified(self, session: Session) -> None:
        data = {"sessionId": session.id, "identity": session.identity, "verified": session.identity_verified}
        await self.emit(session.id, "visitor.identified", data)


def _message_data(message: Message) -> dict[str, Any]:
    if message.sender == "visitor":
        source = str(message.metadata.get("source") or "widget")  # "email" for replies by e-mail
    else:
        source = reply_source(message.sender, message.metadata)
    return {
        "sessionId": message.session_id,
        "message": message.to_wire(),
        "sender": message.sender,
        "source": source,
    }
