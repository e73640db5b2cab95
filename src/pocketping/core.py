"""``PocketPing``: configuration, hooks, lifecycle, and the API of the seed documentation.

A small facade: every conversation operation is :class:`~pocketping.chat.ChatService`'s, which
the ASGI app, the console, the bridges and ``pp.sync`` call too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from .ai import AIResponder
from .bans import Ban
from .chat import ChatService
from .errors import InvalidInput
from .hooks import HookRunner
from .hours import BusinessHours
from .mail import EmailNotifier
from .models import Event, Message, Session
from .operators import Operator, OperatorBook
from .outbox import Outbox
from .policy import IpFilter, Policy, UaFilter
from .ratelimits import Limiter, RateLimits
from .realtime.brokers import RedisBroker, resync_streams
from .realtime.hub import Broker, Hub
from .redaction import protect
from .retention import PURGE_NEEDS, Removed, RetentionSchedule, require
from .stats import Stats
from .storage.base import BaseStorage, ensure_storage
from .webhooks import WebhookEndpoint, Webhooks

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .bridges.queue import BridgeHub
    from .sync import SyncPocketPing

log = logging.getLogger("pocketping")

F = TypeVar("F", bound=Callable[..., Any])

#: SSE streams a WSGI process serves at once unless ``max_sse_streams`` says otherwise.
WSGI_SSE_STREAMS = 8

#: ``PocketPing``'s default ``rate_limits``.
DEFAULT_RATE_LIMITS = RateLimits()


class PocketPing:
    """Live chat for your site, served by your own app.

    >>> pp = PocketPing(welcome_message="Hi! How can we help?")
    >>> app.mount("/pocketping", pp.asgi_app)          # doctest: +SKIP

    Handlers (``on_session_start(session)``, ``on_message(session, message)``,
    ``on_event(session, event)``) may be plain functions or coroutines. They run after the
    triggering request is stored and answered, one at a time per session and in order (plain
    functions on ``hook_workers`` threads, coroutines on the event loop); an exception in one
    is logged with the session id and changes nothing else. At most ``hook_backlog`` calls
    wait (1,000 per session); past that, calls are dropped and logged. ``stop()`` (the
    server's shutdown) runs the pending calls first, for up to ``hook_grace`` seconds.
    """

    def __init__(
        self,
        *,
        bridge_url: str | None = None,
        welcome_message: str | None = None,
        on_session_start: Callable[..., Any] | None = None,
        on_message: Callable[..., Any] | None = None,
        on_event: Callable[..., Any] | None = None,
        storage: Any = None,
        broker: Broker | None = None,
        max_message_length: int = 4000,
        operator_name: str | None = None,
        operator_avatar: str | None = None,
        primary_color: str | None = None,
        prechat_form: dict[str, Any] | None = None,
        allowed_origins: Sequence[str] | str = "*",
        min_widget_version: str | None = None,
        latest_widget_version: str | None = None,
        sse_heartbeat: float = 15.0,
        max_sse_streams: int | None = None,
        console_token: str | None = None,
        files: Any = None,
        bridges: Sequence[Any] | None = None,
        hook_workers: int = 4,
        hook_backlog: int = 20_000,
        hook_grace: float = 10.0,
        trusted_proxies: Sequence[str] = (),
        client_ip_header: str = "X-Forwarded-For",
        ipv6_prefix: int = 64,
        ip_filter: IpFilter | None = None,
        ua_filter: UaFilter | None = None,
        identity_secret: str | None = None,
        require_verified_identity: bool = False,
        rate_limits: RateLimits | None = DEFAULT_RATE_LIMITS,
        retention_days: float | None = None,
        retention_interval: float = 3600.0,
        public_url: str | None = None,
        business_hours: BusinessHours | None = None,
        offline_message: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhooks: Sequence[WebhookEndpoint] | None = None,
        email: EmailNotifier | None = None,
        ai: AIResponder | None = None,
    ) -> None:
        if bridge_url is not None:
            parts = urlsplit(bridge_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInput(
                    f"bridge_url must be an http(s) URL such as http://localhost:3001, not {bridge_url!r}"
                )
            bridge_url = bridge_url.rstrip("/")
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInput(
                    f"public_url must be the mount's absolute URL, such as https://www.example.com/pocketping, "
                    f"not {public_url!r}"
                )
            public_url = public_url.rstrip("/")
        #: The mount's public URL (attachment links operators see), or None: links are paths.
        self.public_url = public_url
        if storage is None:
            from .storage.sqlite import SQLiteStorage

            storage = SQLiteStorage("pocketping.db")
        if files is None:
            from .files import LocalFileStore

            files = LocalFileStore("pocketping-uploads")
        self.bridge_url = bridge_url
        self.welcome_message = welcome_message
        self.storage: BaseStorage = ensure_storage(storage)
        self.broker = broker
        self.operator_name = operator_name
        self.operator_avatar = operator_avatar
        self.primary_color = primary_color
        self.prechat_form = prechat_form
        self.allowed_origins = allowed_origins
        self.min_widget_version = min_widget_version
        self.latest_widget_version = latest_widget_version
        self.sse_heartbeat = sse_heartbeat
        if max_sse_streams is not None and (not isinstance(max_sse_streams, int) or max_sse_streams < 0):
            raise InvalidInput("max_sse_streams must be a number of streams (0 or more) or None")
        #: SSE streams this process serves at once (None: no cap; under WSGI, where each holds
        #: a worker thread, :data:`WSGI_SSE_STREAMS` unless set). Past it, ``/stream`` answers
        #: 503 and the widget polls instead.
        self.max_sse_streams = max_sse_streams
        #: Whether a WSGI server serves this app (``wsgi_app`` / ``wrap_wsgi`` was used).
        self.served_by_wsgi = False
        self.console_token = console_token
        protect(console_token, identity_secret)
        if rate_limits is not None and not isinstance(rate_limits, RateLimits):
            raise InvalidInput("rate_limits must be a RateLimits(...) or None (no limits)")
        protect(rate_limits.storage if rate_limits else None)
        self.hub = Hub()
        self.hooks = HookRunner(
            workers=hook_workers,
            max_pending=hook_backlog,
            max_pending_per_session=min(1000, hook_backlog),
            grace=hook_grace,
        )
        policy = Policy(
            trusted_proxies=trusted_proxies,
            client_ip_header=client_ip_header,
            ipv6_prefix=ipv6_prefix,
            ip_filter=ip_filter,
            ua_filter=ua_filter,
            identity_secret=identity_secret,
            require_verified_identity=require_verified_identity,
        )
        #: Every conversation operation; what the web app, console and bridges call.
        self.chat = ChatService(
            self.storage,
            files=files,
            hooks=self.hooks,
            hub=self.hub,
            broker=broker,
            policy=policy,
            max_message_length=max_message_length,
            limiter=Limiter(
                rate_limits,
                redis_url=broker.url if isinstance(broker, RedisBroker) else None,
                namespace=getattr(broker, "channel", "pocketping"),
                client_key=policy.client_key,
            ),
        )
        if business_hours is not None and not isinstance(business_hours, BusinessHours):
            raise InvalidInput("business_hours must be a BusinessHours(timezone=..., hours={...}) or None")
        if offline_message is not None and (not isinstance(offline_message, str) or not offline_message.strip()):
            raise InvalidInput("offline_message must be a non-empty string or None")
        self.chat.business_hours = business_hours
        self.chat.offline_message = offline_message
        #: Purges idle sessions for ``retention_days`` (None without it).
        self.retention: RetentionSchedule | None = None
        if retention_days is not None:
            self.retention = RetentionSchedule(retention_days, self.purge, interval=retention_interval)
            require(self.chat, PURGE_NEEDS, "retention_days")
        self.bridges = list(bridges or ())
        if bridge_url is not None:
            from .bridges.remote import RemoteBridge

            self.bridges.append(RemoteBridge.for_url(bridge_url))
        #: Everything that leaves the process (bridge posts, webhooks) goes through it.
        self.outbox = Outbox(self)
        #: The bridges' listener (None without bridges); their jobs go through ``outbox``.
        self.bridge_hub: BridgeHub | None = None
        if self.bridges:
            from .bridges.queue import BridgeHub

            self.bridge_hub = BridgeHub(self, self.bridges, self.outbox)
            self.chat.listeners.append(self.bridge_hub)
        endpoints = list(webhooks or ())
        if any(not isinstance(e, WebhookEndpoint) for e in endpoints):
            raise InvalidInput("webhooks must be a list of WebhookEndpoint(url=..., secret=..., events=[...])")
        if webhook_url is not None:
            if webhook_secret is None:
                raise InvalidInput("webhook_url needs webhook_secret: make one with pocketping.new_webhook_secret()")
            endpoints.insert(0, WebhookEndpoint(url=webhook_url, secret=webhook_secret))
        elif webhook_secret is not None:
            raise InvalidInput("webhook_secret is given without webhook_url")
        protect(webhook_secret, *(e.secret for e in endpoints))
        #: The webhooks' listener (None without endpoints); their jobs go through ``outbox``.
        self.webhooks: Webhooks | None = Webhooks(self.outbox, endpoints) if endpoints else None
        if self.webhooks is not None:
            self.chat.listeners.append(self.webhooks)
        if email is not None and not isinstance(email, EmailNotifier):
            raise InvalidInput("email must be an EmailNotifier(host=..., sender=...) or None")
        #: The e-mail follow-up (None without it); its jobs go through ``outbox``.
        self.email = email
        if email is not None:
            email.bind(self)
        #: Operator accounts and console sign-ins (``add_operator``, ``remove_operator``...).
        self.operators = OperatorBook(self.storage, lambda: self.outbox.store)
        if ai is not None and not isinstance(ai, AIResponder):
            raise InvalidInput("ai must be an AIResponder(base_url=..., model=...) or None")
        #: The AI first responder (None without it); its pending answers go through ``outbox``.
        self.ai = ai
        if ai is not None:
            ai.bind(self)
        if self.outbox.destinations:
            self.chat.listeners.append(self.outbox)
        for kind, fn in (("session_start", on_session_start), ("message", on_message), ("event", on_event)):
            if fn is not None:
                self.hooks.add(kind, fn)  # type: ignore[arg-type]
        self.started = False
        self._start_lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        if broker is not None:
            broker.on_frame = self.hub.deliver
            self.hub.track_seen = True
            broker.on_gap = self._resync

    def __repr__(self) -> str:
        return f"PocketPing(storage={self.storage!r})"

    @property
    def files(self) -> Any:
        """Where attachments are kept (a :class:`~pocketping.LocalFileStore` by default)."""
        return self.chat.files

    @files.setter
    def files(self, store: Any) -> None:
        self.chat.files = store

    @property
    def max_message_length(self) -> int:
        return self.chat.max_message_length

    @max_message_length.setter
    def max_message_length(self, value: int) -> None:
        if value < 1:
            raise InvalidInput("max_message_length must be at least 1")
        self.chat.max_message_length = value

    @property
    def business_hours(self) -> BusinessHours | None:
        """The opening hours (``business_hours=``), or None: someone answers at any time."""
        return self.chat.business_hours

    async def is_open(self) -> bool:
        """Whether it is within the opening hours now (always True without ``business_hours``)."""
        return self.chat.business_hours is None or self.chat.business_hours.is_open()

    @property
    def operator_online(self) -> bool:
        """Whether operators are shown as online ("Active now") in the widget."""
        return self.chat.operator_online

    # -- handlers ---------------------------------------------------------------------------

    def on_session_start(self, fn: F) -> F:
        """Register ``fn(session)``, called once per new session. Usable as a decorator."""
        self.hooks.add("session_start", fn)
        return fn

    def on_message(self, fn: F) -> F:
        """Register ``fn(session, message)``, called for each visitor message."""
        self.hooks.add("message", fn)
        return fn

    def on_event(self, fn: F) -> F:
        """Register ``fn(session, event)``, called for each custom event from the widget."""
        self.hooks.add("event", fn)
        return fn

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the storage and the broker. Idempotent; the app also calls it lazily."""
        if self.started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.started:
                return
            await self.storage.open()
            await self.chat.bans.load()
            self.chat.bans.start()
            if self.broker is not None:
                await self.broker.start()
            if self.bridge_hub is not None:
                await self.bridge_hub.start()
            if self.outbox.destinations:
                await self.outbox.start()
            self.hooks.start()
            if self.retention is not None:
                self.retention.start()
            self.loop = asyncio.get_running_loop()
            self.started = True
            log.debug("started with %r", self.storage)

    async def stop(self) -> None:
        """Run pending hook calls (up to ``hook_grace`` s), end open streams, close broker and storage."""
        if not self.started:
            return
        self.started = False
        if self.retention is not None:
            await self.retention.stop()
        await self.chat.bans.stop()
        await self.hooks.stop()
        await self.chat.fanout.settle()
        self.chat.stop()
        self.hub.close_all()
        if self.broker is not None:
            await self.broker.stop()
        await self.chat.limiter.close()
        await self.outbox.stop()
        if self.bridge_hub is not None:
            await self.bridge_hub.stop()
        await self.storage.close()
        self._start_lock = None
        self.loop = None

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """``FastAPI(lifespan=pp.lifespan)``, or ``async with pp.lifespan(app):`` inside yours."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @cached_property
    def asgi_app(self) -> ASGIApp:
        """The ASGI app to mount at ``/pocketping`` (Starlette, FastAPI, Django ASGI, …)."""
        from .web.app import build_asgi_app

        return build_asgi_app(self)

    @cached_property
    def wsgi_app(self) -> Any:
        """The same endpoints for WSGI servers (HTTP, SSE and polling; no WebSocket). Each SSE
        stream holds a worker thread: at most ``max_sse_streams`` (default
        :data:`WSGI_SSE_STREAMS`; keep it below the threads per worker) are served at once."""
        from a2wsgi import ASGIMiddleware

        if self.max_sse_streams is None:
            self.max_sse_streams = WSGI_SSE_STREAMS
        self.served_by_wsgi = True
        return ASGIMiddleware(self.asgi_app)  # type: ignore[arg-type]

    def wrap(self, app: ASGIApp, path: str = "/pocketping") -> ASGIApp:
        """An ASGI app serving PocketPing under ``path`` and ``app`` everywhere else, with
        PocketPing started and stopped by the server's lifespan. For Django ASGI::

            application = pp.wrap(get_asgi_application())
        """
        from .web.integrations import ASGIWrapper

        return ASGIWrapper(self, app, path)

    def wrap_wsgi(self, app: Any, path: str = "/pocketping") -> Any:
        """The WSGI twin of :meth:`wrap` (Flask, Django WSGI): HTTP, SSE and polling; the widget
        falls back from WebSocket to SSE, as WSGI servers cannot upgrade connections::

            app.wsgi_app = pp.wrap_wsgi(app.wsgi_app)          # Flask
        """
        from .web.integrations import wrap_wsgi

        return wrap_wsgi(self, app, path)

    @cached_property
    def sync(self) -> SyncPocketPing:
        """The public API as blocking calls, for WSGI views, scripts and task queues."""
        from .sync import SyncPocketPing

        return SyncPocketPing(self)

    # -- fan-out ----------------------------------------------------------------------------

    def publish(self, session_id: str | None, type: str, data: dict[str, Any], event_id: str | None = None) -> None:
        """Push ``{"type", "data"}`` to the session's open streams (``None``: all streams),
        on this process and, through the broker, on every other."""
        self.chat.publish(session_id, type, data, event_id)

    async def _resync(self, since: datetime) -> None:
        """After a broker gap: open streams catch up from storage on what changed since ``since``."""
        await resync_streams(self.hub, self.chat.catch_up, since)

    # -- the seed API -----------------------------------------------------------------------

    async def get_sessions(self, *, limit: int | None = 100, include_closed: bool = False) -> list[Session]:
        """Active sessions (``include_closed=True``: all), most recent activity first."""
        return await self.chat.list_sessions(limit=limit, include_closed=include_closed)

    async def get_session(self, session_id: str) -> Session:
        """The session, or :class:`SessionNotFound`."""
        return await self.chat.get_session(session_id)

    async def get_messages(
        self, session_id: str, *, after: datetime | str | None = None, limit: int | None = None
    ) -> list[Message]:
        """The session's messages, oldest first.

        ``after`` (a datetime or ISO-8601 string, e.g. a previous message's ``updated_at``)
        returns only messages created or changed after it, in change order: the same cursor
        the widget uses to catch up. ``limit`` caps the count.
        """
        return await self.chat.get_messages(session_id, after=after, limit=limit)

    async def close_session(self, session_id: str) -> Session:
        """End the session: marked closed in storage, announced to its open widgets (a custom
        event ``session_closed``). A later visitor message reopens it."""
        return await self.chat.close_session(session_id)

    async def send_message(
        self,
        session_id: str,
        content: str | None = None,
        *,
        type: str = "operator",
        reply_to: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        """Store a message from the operator side (``type``: operator, ai or system) and push
        it to the visitor's open widgets."""
        return await self.chat.send_message(session_id, content, type=type, reply_to=reply_to, metadata=metadata)

    async def emit_event(self, session_id: str, name: str, /, **data: Any) -> Event:
        """Push a custom event to the visitor's open widgets (WebSocket and SSE), where the
        page's ``onEvent`` handlers receive it: ``emit_event(sid, "show_offer", discount=20)``."""
        return await self.chat.emit_event(session_id, name, data)

    # -- more of the operator side ----------------------------------------------------------

    async def send_typing(self, session_id: str, is_typing: bool = True, *, sender: str = "operator") -> None:
        """Show (or hide) the typing dots in the visitor's widget; they clear by themselves
        after 5 s or when a message is sent."""
        await self.chat.operator_typing(session_id, is_typing, sender=sender)

    async def request_csat(self, session_id: str) -> datetime:
        """Ask the visitor to rate the conversation: the official widget shows its rating
        card; the answer is stored with the session (``session.data["csat"]``), shown in the
        operators' threads, and given to ``on_event`` as the event ``csat``."""
        return await self.chat.request_csat(session_id)

    # -- operator accounts ------------------------------------------------------------------

    async def add_operator(self, name: str, *, password: str, role: str = "agent") -> Operator:
        """Create an account for the console: ``role`` ``"agent"`` or ``"admin"`` (admins
        manage operators and see stats). The name is shown to visitors on the replies."""
        await self.start()
        return await self.operators.add(name, password, role)

    async def remove_operator(self, name: str) -> None:
        """Remove an account; its sign-ins end."""
        await self.start()
        await self.operators.remove(name)

    async def set_operator_password(self, name: str, password: str) -> None:
        """Set a new password; every sign-in of that operator ends."""
        await self.start()
        await self.operators.set_password(name, password)

    async def list_operators(self) -> list[Operator]:
        await self.start()
        return await self.operators.list()

    async def set_ai(self, session_id: str, active: bool) -> None:
        """Let the AI responder answer in this conversation again (``True``: handing back;
        replies by people so far no longer keep it quiet) or not (``False``)."""
        if self.ai is None:
            raise InvalidInput("set_ai needs an AI responder: PocketPing(ai=AIResponder(...))")
        await self.ai.set_active(session_id, bool(active), None if active else "turned off by an operator")

    async def set_operator_online(self, online: bool) -> None:
        """Operator presence: the widget's "Active now" header; pushed to every open widget."""
        await self.chat.set_operator_online(online)

    async def edit_message(self, session_id: str, message_id: str, content: str) -> Message:
        """Change a message's text; open widgets show it as edited."""
        return await self.chat.edit_message(session_id, message_id, content)

    async def delete_message(self, session_id: str, message_id: str) -> Message:
        """Soft-delete a message; open widgets show "Message deleted"."""
        return await self.chat.delete_message(session_id, message_id)

    async def mark_read(self, session_id: str, message_ids: Sequence[str], status: str = "read") -> list[Message]:
        """Mark messages ``read`` (or ``delivered``); pushes a ``read`` receipt."""
        return await self.chat.mark_read(session_id, message_ids, status)

    async def ban(
        self, session_id: str, *, address: bool = False, user: bool = False, reason: str | None = None
    ) -> Session:
        """Block the session: it can no longer post, upload, read receipts or resume (403), on
        every process and after restarts (the flag is stored with the session); its open
        streams end. ``address=True`` also bans the session's client address (an IPv6
        client's /64, see ``ipv6_prefix``), ``user=True`` its verified user id."""
        return await self.chat.ban(session_id, address=address, user=user, reason=reason)

    async def unban(self, session_id: str, *, address: bool = False, user: bool = False) -> Session:
        """Undo :meth:`ban` (with ``address`` / ``user``: those bans too)."""
        return await self.chat.unban(session_id, address=address, user=user)

    async def ban_address(self, address: str, *, reason: str | None = None) -> Ban:
        """Refuse every widget request from an address or CIDR range (403), whatever visitor or
        session it claims; on every process within 5 s, and after restarts."""
        return await self.chat.ban_address(address, reason=reason)

    async def unban_address(self, address: str) -> bool:
        """Lift an address ban; False if there was none."""
        return await self.chat.unban_address(address)

    async def ban_user(self, user_id: str, *, reason: str | None = None) -> Ban:
        """Refuse the verified user ``user_id`` (an identity signed with ``identity_secret``) on
        every session and every new one."""
        return await self.chat.ban_user(user_id, reason=reason)

    async def unban_user(self, user_id: str) -> bool:
        """Lift a user ban; False if there was none."""
        return await self.chat.unban_user(user_id)

    def list_bans(self) -> list[Ban]:
        """The address and user bans in force."""
        return self.chat.list_bans()

    async def get_stats(self, *, since: datetime | str | None = None, until: datetime | str | None = None) -> Stats:
        """Conversations started in ``[since, until)`` (default: the last 30 days): how many,
        visitor messages, replies by where they came from, response rate, median and 90th
        percentile first-response time (seconds), unanswered now, CSAT. Computed by the
        storage's aggregate queries."""
        return await self.chat.get_stats(since, until)

    # -- erasure and retention --------------------------------------------------------------

    async def export(self, visitor_id: str) -> dict[str, Any]:
        """A JSON-serialisable dict of everything stored about the visitor: their sessions
        (metadata, identity, pre-chat answers, rating), messages and attachment metadata."""
        return await self.chat.export(visitor_id)

    async def forget(self, visitor_id: str) -> Removed:
        """Erase the visitor everywhere PocketPing keeps them: sessions, messages, uploaded
        files, bridge outbox rows and thread mappings. Returns what was removed."""
        return await self.chat.forget(visitor_id)

    async def purge(self, before: datetime | str) -> Removed:
        """Erase, now, every session whose last activity is before ``before`` (a datetime or
        ISO-8601 text). Returns what was removed."""
        return await self.chat.purge(before)
