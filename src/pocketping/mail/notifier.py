"""``EmailNotifier``: the outbox destination that e-mails replies a visitor has not seen.

Each operator or AI reply queues an ``email`` job due ``unread_after`` seconds later (a job due
later survives restarts and holds the session's line, so the jobs of one conversation run in
order). When a job comes due and a newer reply exists, it does nothing: the newer reply's job
sends the batch once no reply has come for ``unread_after`` seconds. The batch is every reply
since the last e-mail that the visitor has not seen: not delivered to an open stream of theirs
(marked ``delivered`` when it was), not marked read by their widget, and not followed by a
message of theirs in the widget. State lives in the storage's key-value map, removed with the
session by ``forget`` and ``purge``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import DeliveryError, InvalidInput, TemporaryDeliveryError
from ..models import Message, Session, to_ms
from ..outbox import AppDestination
from ..redaction import protect
from .compose import FollowUp, Line, build, checked_address
from .inbound import TOKEN, InboundReply

if TYPE_CHECKING:
    from ..core import PocketPing

log = logging.getLogger("pocketping.email")

REPLY_SENDERS = ("operator", "ai")


def require_email() -> None:
    """Raise ImportError with the install hint when the ``email`` extra is missing."""
    try:
        import aiosmtplib  # noqa: F401
        import mailparser_reply  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"EmailNotifier needs the email extra ({exc.name} is missing): pip install 'pocketping[email]'"
        ) from None


#: Waits before each retry of a failed send (with jitter); after the last the batch is dead.
RETRY_SCHEDULE: tuple[float, ...] = (30, 120, 600, 1800, 3600, 3600 * 3, 3600 * 6, 3600 * 12)


class EmailNotifier(AppDestination):
    """E-mails replies a visitor has not seen within ``unread_after`` seconds, through
    ``host:port`` (STARTTLS unless ``starttls=False``; implicit TLS on port 465), from
    ``sender``. With ``reply_domain`` the visitor can answer by e-mail: ``Reply-To`` is
    ``reply+<token>@<reply_domain>``, and the mail server relays answers to
    ``POST <mount>/webhooks/email`` with ``Authorization: Bearer <inbound_secret>``.

    ``subject`` (default "Your conversation with <operator_name or sender's domain>") stays
    the same for a conversation; ``context_messages`` earlier messages are quoted under the
    new replies; ``timeout``: seconds per SMTP exchange.
    """

    name = "email"
    setting = "email"
    logger = "pocketping.email"
    refuser = "the SMTP server"

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        unread_after: float = 180,
        reply_domain: str | None = None,
        inbound_secret: str | None = None,
        subject: str | None = None,
        context_messages: int = 3,
        timeout: float = 30.0,
        retry_schedule: Sequence[float] = RETRY_SCHEDULE,
    ) -> None:
        require_email()
        if not isinstance(host, str) or not host.strip():
            raise InvalidInput("EmailNotifier host must be the SMTP server's name, such as smtp.example.com")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InvalidInput(f"EmailNotifier port must be a TCP port (587, 465, 25...), not {port!r}")
        self.sender = checked_address(sender, "EmailNotifier sender")
        if (username is None) != (password is None):
            raise InvalidInput("EmailNotifier username and password go together: give both or neither")
        if not isinstance(unread_after, (int, float)) or isinstance(unread_after, bool) or unread_after < 0:
            raise InvalidInput(f"EmailNotifier unread_after must be seconds (0 or more), not {unread_after!r}")
        if reply_domain is not None:
            checked_address(f"reply@{reply_domain}", "EmailNotifier reply_domain (a domain such as mail.example.com)")
            if inbound_secret is None:
                raise InvalidInput(
                    "EmailNotifier reply_domain needs inbound_secret: the mail server relays replies with it "
                    "(make one with secrets.token_urlsafe(32))"
                )
        if inbound_secret is not None and (not isinstance(inbound_secret, str) or len(inbound_secret) < 16):
            raise InvalidInput("EmailNotifier inbound_secret must be a string of 16 characters or more")
        if not isinstance(context_messages, int) or context_messages < 0:
            raise InvalidInput("EmailNotifier context_messages must be a number of messages (0 or more)")
        protect(password, inbound_secret)
        self.host = host.strip()
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.unread_after = float(unread_after)
        self.reply_domain = reply_domain.lower() if reply_domain else None
        self.inbound_secret = inbound_secret
        self.subject = subject
        self.context_messages = context_messages
        self.timeout = timeout
        self.retry_schedule = tuple(float(s) for s in retry_schedule)
        self._sending = asyncio.Semaphore(4)  # SMTP connections at once

    def __repr__(self) -> str:  # the password stays out of logs
        return f"EmailNotifier(host={self.host!r}, port={self.port}, sender={str(self.sender)!r})"

    # -- wiring -----------------------------------------------------------------------------

    def check_app(self, pp: PocketPing) -> None:
        if pp.public_url is None and self.reply_domain is None:
            raise InvalidInput(
                "email needs public_url= (the mount's public address, for the unsubscribe link in each e-mail) "
                "or EmailNotifier(reply_domain=...) (unsubscribing by e-mail)"
            )

    # -- listening --------------------------------------------------------------------------

    async def operator_message(self, message: Message) -> None:
        if message.sender not in REPLY_SENDERS:
            return
        sid = message.session_id
        if self.pp.hub.count(sid):  # an open stream of the visitor's on this process got it
            await self.pp.chat.mark_read(sid, [message.id], "delivered")
        await self.pp.outbox.enqueue(
            self.name, sid, "email", message.id, {"messageId": message.id}, delay=self.unread_after
        )

    async def recover(self, session: Session, messages: list[Message]) -> None:
        """Queue again the e-mail job of the session's newest reply unless its batch was
        handled (a job queued twice finds the batch done and sends nothing)."""
        replies = [m for m in messages if m.sender in REPLY_SENDERS]
        if not replies:
            return
        newest = replies[-1]
        if to_ms(newest.created_at) <= (await self._state(session.id))["through"]:
            return
        waited = (datetime.now(UTC) - newest.created_at).total_seconds()
        await self.pp.outbox.enqueue(
            self.name,
            session.id,
            "email",
            newest.id,
            {"messageId": newest.id},
            delay=max(0.0, self.unread_after - waited),
        )

    # -- state ------------------------------------------------------------------------------

    async def _state(self, sid: str) -> dict[str, Any]:
        raw = await self.pp.outbox.store.bridge_key_get(f"email:state:{sid}")
        return dict(json.loads(raw)) if raw else {"through": 0, "sent": 0}

    async def token(self, sid: str) -> str | None:
        """The conversation's reply token (made on first use); None if the session is gone."""
        store = self.pp.outbox.store
        found = await store.bridge_key_get(f"email:token:{sid}")
        if found:
            return found
        token = secrets.token_hex(16)
        if not await store.bridge_key_set(f"email:conversation:{token}", sid, session_id=sid, only_new=True):
            return None
        if await store.bridge_key_set(f"email:token:{sid}", token, session_id=sid, only_new=True):
            return token
        return await store.bridge_key_get(f"email:token:{sid}")  # another process made one first

    async def session_of_token(self, token: str) -> Session | None:
        """The conversation a reply token belongs to, if it still exists."""
        if not TOKEN.match(token):
            return None
        sid = await self.pp.outbox.store.bridge_key_get(f"email:conversation:{token}")
        return await self.pp.storage.get_session(sid) if sid else None

    async def unsubscribed(self, session: Session) -> bool:
        return await self.pp.outbox.store.bridge_key_get(f"email:off:{session.visitor_id}") is not None

    async def unsubscribe(self, session: Session) -> None:
        """No more e-mails for this visitor."""
        await self.pp.outbox.store.bridge_key_set(f"email:off:{session.visitor_id}", "1", session_id=session.id)
        log.info("visitor unsubscribed from e-mails", extra={"session_id": session.id, "bridge": self.name})

    # -- sending ----------------------------------------------------------------------------

    async def deliver(self, job: dict[str, Any]) -> None:
        sid = job["session_id"]
        store = self.pp.outbox.store
        done_key = f"email:done:{job['id']}"
        if await store.bridge_key_get(done_key) is not None:
            return
        session = await self.pp.storage.get_session(sid)
        if session is None:
            return
        to = visitor_address(session)
        if to is None or await self.unsubscribed(session):
            return
        messages = await self.pp.storage.get_messages(sid)
        mine = next((m for m in messages if m.id == job["payload"]["messageId"]), None)
        replies = [m for m in messages if m.sender in REPLY_SENDERS and m.deleted_at is None]
        if not replies or (mine is not None and replies[-1].created_at > mine.created_at):
            return  # a newer reply's job sends the batch
        state = await self._state(sid)
        last_visitor = max((to_ms(m.created_at) for m in messages if m.sender == "visitor"), default=0)
        unseen = [
            m
            for m in replies
            if to_ms(m.created_at) > state["through"]
            and m.status not in ("delivered", "read")
            and to_ms(m.created_at) > last_visitor
        ]
        state["through"] = to_ms(replies[-1].created_at)
        if unseen:
            await self._send(session, to, messages, unseen, state)
            state["sent"] += 1
        await store.bridge_key_set(f"email:state:{sid}", json.dumps(state), session_id=sid)
        await store.bridge_key_set(done_key, "1", session_id=sid)

    async def _send(
        self, session: Session, to: str, messages: list[Message], unseen: list[Message], state: dict[str, Any]
    ) -> None:
        pp = self.pp
        token = await self.token(session.id)
        if token is None:
            return  # erased meanwhile
        domain = self.sender.domain
        n = int(state["sent"]) + 1
        earlier = [m for m in messages if m.created_at < unseen[0].created_at and m.deleted_at is None and m.content]
        brand = pp.operator_name or domain
        mail = FollowUp(
            sender=self.sender,
            sender_name=brand,
            to=checked_address(to, "the visitor's e-mail"),
            subject=self.subject or f"Your conversation with {brand}",
            greeting_name=_name(session),
            replies=[Line(self._who(m), m.content, m.created_at) for m in unseen],
            context=[Line(self._who(m), m.content, m.created_at) for m in earlier[-self.context_messages :]]
            if self.context_messages
            else [],
            page_url=self._page_url(session),
            unsubscribe_url=f"{pp.public_url}/email/unsubscribe/{token}" if pp.public_url else None,
            unsubscribe_mailto=f"mailto:reply+{token}@{self.reply_domain}?subject=unsubscribe"
            if self.reply_domain
            else None,
            reply_to=checked_address(f"reply+{token}@{self.reply_domain}", "reply address")
            if self.reply_domain
            else None,
            message_id=f"<{token}.{n}@{domain}>",
            in_reply_to=f"<{token}.{n - 1}@{domain}>" if n > 1 else None,
            references=[f"<{token}.{i}@{domain}>" for i in range(max(1, n - 10), n)],
        )
        message = build(mail)
        extra = {"session_id": session.id, "bridge": self.name}
        import aiosmtplib

        async with self._sending:
            try:
                await aiosmtplib.send(
                    message,
                    hostname=self.host,
                    port=self.port,
                    username=self.username,
                    password=self.password,
                    use_tls=self.port == 465,
                    start_tls=self.starttls if self.port != 465 else False,
                    timeout=self.timeout,
                )
            except aiosmtplib.SMTPResponseException as exc:
                reason = f"the SMTP server answered {exc.code}: {exc.message}"
                if 500 <= exc.code < 600 and exc.code != 530:  # 530: auth needed, a setting to fix
                    raise DeliveryError(reason) from None
                raise TemporaryDeliveryError(reason) from None
            except aiosmtplib.SMTPRecipientsRefused as exc:
                raise DeliveryError(f"the SMTP server refused the visitor's address ({len(exc.recipients)})") from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise TemporaryDeliveryError(f"{type(exc).__name__} sending the e-mail: {exc}") from None
        log.info("e-mailed %d unseen replies", len(unseen), extra=extra)

    def _who(self, message: Message) -> str:
        if message.sender == "visitor":
            return "You"
        name = message.metadata.get("operatorName")
        if isinstance(name, str) and name.strip():
            return name.strip()
        if message.sender == "ai":
            return "Assistant"
        return self.pp.operator_name or "Support"

    def _page_url(self, session: Session) -> str | None:
        """The page the conversation started on, when its origin is the site's own (the
        widget reports the URL: a link to another site is never put in an e-mail)."""
        url = session.metadata.get("url")
        if not isinstance(url, str):
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        trusted = set()
        if self.pp.public_url:
            mount = urlsplit(self.pp.public_url)
            trusted.add(f"{mount.scheme}://{mount.netloc}".lower())
        allowed = self.pp.allowed_origins
        if allowed != "*":
            trusted.update(o.lower().rstrip("/") for o in ([allowed] if isinstance(allowed, str) else allowed))
        return url if origin in trusted else None

    # -- receiving --------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the inbound secret (constant time)."""
        if self.inbound_secret is None or not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.inbound_secret.encode())

    async def receive(self, reply: InboundReply) -> dict[str, Any]:
        """Store a reply by e-mail as the visitor's message (reopening a closed conversation);
        what the inbound route answers. :class:`LookupError` for an unknown token."""
        session = await self.session_of_token(reply.token) if reply.token else None
        if session is None:
            raise LookupError("no conversation has this reply address")
        extra = {"session_id": session.id, "bridge": self.name}
        if reply.subject.strip().lower() == "unsubscribe" and not reply.text.strip():
            await self.unsubscribe(session)
            return {"ok": True, "unsubscribed": True}
        if reply.automatic:
            log.info("ignored an automatic reply by e-mail (out of office, bounce)", extra=extra)
            return {"ok": True, "ignored": "automatic reply"}
        if not reply.text.strip():
            raise InvalidInput("the e-mail holds no new text (only quoted history or a signature)")
        text = reply.text.strip()[: self.pp.chat.max_message_length]
        message = await self.pp.chat.visitor_message(session.id, text, source="email")
        return {"ok": True, "messageId": message.id, "sessionId": session.id}


def visitor_address(session: Session) -> str | None:
    """Where the visitor can be e-mailed: the e-mail of ``identify``, else of the pre-chat or
    leave-a-message form."""
    candidates = [(session.identity or {}).get("email")]
    for form in ("prechat", "leave_message"):
        data = session.data.get(form)
        if isinstance(data, dict):
            candidates.append(data.get("email"))
    for value in candidates:
        if isinstance(value, str) and value.strip():
            try:
                checked_address(value, "e-mail")
            except InvalidInput:
                continue
            return value.strip()
    return None


def _name(session: Session) -> str | None:
    name = (session.identity or {}).get("name")
    return name.strip()[:80] if isinstance(name, str) and name.strip() else None
