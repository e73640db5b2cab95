"""``PocketPing``: configuration, handlers, and the API of the seed documentation.

One async core serves every entry point: the ASGI app, the WSGI adapter, and ``pp.sync``
(the same coroutines run to completion from blocking code).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio.to_thread

from .errors import Forbidden, InvalidInput, MessageNotFound, SessionNotFound
from .models import SENDERS, Attachment, Event, Message, Session, iso, new_id, parse_time
from .realtime.hub import ALL, Broker, Frame, Hub
from .storage.base import STAMP, BaseStorage, ensure_storage

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .sync import SyncPocketPing

log = logging.getLogger("pocketping")
handler_log = logging.getLogger("pocketping.handlers")

F = TypeVar("F", bound=Callable[..., Any])

OPERATOR_TYPES = ("operator", "ai", "system")
TYPING_TTL = 5.0
VISITOR_TYPING_INTERVAL = 2.0


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class PocketPing:
    """Live chat for your site, served by your own app.

    >>> pp = PocketPing(welcome_message="Hi! How can we help?")
    >>> app.mount("/pocketping", pp.asgi_app)          # doctest: +SKIP

    Handlers (``on_session_start(session)``, ``on_message(session, message)``,
    ``on_event(session, event)``) may be plain functions (run in a worker thread) or
    coroutines. They run after the triggering request is stored and answered; an exception
    in one is logged with the session id and changes nothing else.
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
        console_token: str | None = None,
        files: Any = None,
        bridges: Sequence[Any] | None = None,
    ) -> None:
        if bridge_url is not None:
            parts = urlsplit(bridge_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInput(
                    f"bridge_url must be an http(s) URL such as http://localhost:3001, not {bridge_url!r}"
                )
            bridge_url = bridge_url.rstrip("/")
        if max_message_length < 1:
            raise InvalidInput("max_message_length must be at least 1")
        if storage is None:
            from .storage.sqlite import SQLiteStorage

            storage = SQLiteStorage("pocketping.db")
        self.bridge_url = bridge_url
        self.welcome_message = welcome_message
        self.storage: BaseStorage = ensure_storage(storage)
        self.broker = broker
        self.max_message_length = max_message_length
        self.operator_name = operator_name
        self.operator_avatar = operator_avatar
        self.primary_color = primary_color
        self.prechat_form = prechat_form
        self.allowed_origins = allowed_origins
        self.min_widget_version = min_widget_version
        self.latest_widget_version = latest_widget_version
        self.sse_heartbeat = sse_heartbeat
        self.console_token = console_token
        if files is None:
            from .files import LocalFileStore

            files = LocalFileStore("pocketping-uploads")
        self.files = files
        self.bridges = list(bridges or ())
        if bridge_url is not None:
            from .bridges.remote import RemoteBridge

            self.bridges.append(RemoteBridge.from_env(bridge_url))
        self._bridges: Any = None
        if self.bridges:
            from .bridges.queue import BridgeHub

            self._bridges = BridgeHub(self, self.bridges)
        self.operator_online = False
        self.hub = Hub()
        self._handlers: dict[str, list[Callable[..., Any]]] = {
            "session_start": [],
            "message": [],
            "event": [],
        }
        for kind, fn in (
            ("session_start", on_session_start),
            ("message", on_message),
            ("event", on_event),
        ):
            if fn is not None:
                self._add_handler(kind, fn)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._typing_timers: dict[str, asyncio.TimerHandle] = {}
        self._visitor_typing_at: dict[str, float] = {}
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        if broker is not None:
            broker.on_frame = self.hub.deliver
            self.hub.track_seen = True
            broker.on_gap = self._resync

    def __repr__(self) -> str:
        return f"PocketPing(storage={self.storage!r})"

    # -- handlers ---------------------------------------------------------------------------

    def _add_handler(self, kind: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"on_{kind} handler must be callable, not {type(fn).__name__}")
        self._handlers[kind].append(fn)

    def on_session_start(self, fn: F) -> F:
        """Register ``fn(session)``, called once per new session. Usable as a decorator."""
        self._add_handler("session_start", fn)
        return fn

    def on_message(self, fn: F) -> F:
        """Register ``fn(session, message)``, called for each visitor message."""
        self._add_handler("message", fn)
        return fn

    def on_event(self, fn: F) -> F:
        """Register ``fn(session, event)``, called for each custom event from the widget."""
        self._add_handler("event", fn)
        return fn

    def _dispatch(self, kind: str, session: Session, *args: Any) -> None:
        for fn in self._handlers[kind]:
            self._spawn(self._run_handler(kind, fn, session, *args))

    async def _run_handler(self, kind: str, fn: Callable[..., Any], session: Session, *args: Any) -> None:
        try:
            if inspect.iscoroutinefunction(fn):
                await fn(session, *args)
            else:
                result = await anyio.to_thread.run_sync(partial(fn, session, *args))
                if inspect.isawaitable(result):
                    await result
        except Exception:
            handler_log.exception(
                "on_%s handler %s failed for session %s",
                kind,
                getattr(fn, "__qualname__", fn),
                session.id,
                extra={"session_id": session.id, "handler": kind},
            )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the storage and the broker. Idempotent; the app also calls it lazily."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            await self.storage.open()
            if self.broker is not None:
                await self.broker.start()
            if self._bridges is not None:
                await self._bridges.start()
            self.loop = asyncio.get_running_loop()
            self._started = True
            log.debug("started with %r", self.storage)

    async def stop(self) -> None:
        """Finish running handlers (up to 10 s), end open streams, close broker and storage."""
        if not self._started:
            return
        self._started = False
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        for timer in self._typing_timers.values():
            timer.cancel()
        self._typing_timers.clear()
        self.hub.close_all()
        if self.broker is not None:
            await self.broker.stop()
        if self._bridges is not None:
            await self._bridges.stop()
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
        """The same endpoints for WSGI servers (HTTP, SSE and polling; no WebSocket)."""
        from a2wsgi import ASGIMiddleware

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
        if self.broker is None and not self.hub.listening(session_id):
            return  # nobody to tell: skip serialising
        frame: Frame = (_dumps({"type": type, "data": data}), event_id)
        self.hub.deliver(session_id, frame)
        if self.broker is not None:
            self._spawn(self.broker.publish(session_id, frame))

    async def _resync(self, since: datetime) -> None:
        """After a broker gap: open streams catch up from storage on what changed since ``since``."""
        from .realtime.brokers import resync_streams

        await resync_streams(self, since)

    def _publish_message(self, message: Message) -> None:
        if self.broker is None and not self.hub.listening(message.session_id):
            return
        wire = message.to_wire()
        # A new message's change stamp is its creation stamp: reuse the text.
        cursor = wire["timestamp"] if message.updated_at in (None, message.created_at) else iso(message.cursor)
        self.publish(message.session_id, "message", wire, cursor)

    # -- the seed API -----------------------------------------------------------------------

    async def _session(self, session_id: str) -> Session:
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInput("session_id must be a non-empty string")
        session = await self.storage.get_session(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    async def get_sessions(self, *, limit: int | None = 100, include_closed: bool = False) -> list[Session]:
        """Active sessions (``include_closed=True``: all), most recent activity first."""
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be a positive integer or None")
        return await self.storage.list_sessions(limit=limit, include_closed=include_closed)

    async def get_session(self, session_id: str) -> Session:
        """The session, or :class:`SessionNotFound`."""
        return await self._session(session_id)

    async def get_messages(
        self, session_id: str, *, after: datetime | str | None = None, limit: int | None = None
    ) -> list[Message]:
        """The session's messages, oldest first.

        ``after`` (a datetime or ISO-8601 string, e.g. a previous message's ``updated_at``)
        returns only messages created or changed after it, in change order: the same cursor
        the widget uses to catch up. ``limit`` caps the count.
        """
        await self._session(session_id)
        cursor = None
        if after is not None:
            try:
                cursor = parse_time(after)
            except ValueError as exc:
                raise InvalidInput(f"after: {exc}") from None
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be a positive integer or None")
        return await self.storage.get_messages(session_id, after=cursor, limit=limit)

    async def close_session(self, session_id: str) -> Session:
        """End the session: marked closed in storage, announced to its open widgets (a custom
        event ``session_closed``). A later visitor message reopens it."""
        session = await self._session(session_id)
        if session.status != "closed":
            session.status = "closed"
            session.closed_at = datetime.now(UTC)
            await self.storage.update_session(session)
            if self._bridges is not None:
                await self._bridges.session_closed(session)
        self._stop_typing(session_id)
        event = Event("session_closed", {"sessionId": session_id}, session_id=session_id)
        self.publish(session_id, "event", event.to_wire())
        return session

    def _check_content(self, content: Any, *, allow_empty: bool = False) -> str:
        if not isinstance(content, str):
            raise InvalidInput(f"content must be a string, not {type(content).__name__}")
        if not allow_empty and not content.strip():
            raise InvalidInput("content must not be empty")
        if len(content) > self.max_message_length:
            raise InvalidInput(f"content is {len(content)} characters long; the limit is {self.max_message_length}")
        return content

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
        if type not in OPERATOR_TYPES:
            raise InvalidInput(f"type must be one of {', '.join(OPERATOR_TYPES)}, not {type!r}")
        content = self._check_content(content)
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInput("session_id must be a non-empty string")
        if not await self.storage.has_session(session_id):
            raise SessionNotFound(session_id)
        message = Message(
            id=new_id("msg"),
            session_id=session_id,
            content=content,
            sender=type,
            created_at=datetime.now(UTC),
            reply_to=reply_to,
            metadata=dict(metadata or {}),
        )
        message = await self.storage.save_message(session_id, message)
        self._stop_typing(session_id, announce=False)
        self._publish_message(message)
        if self._bridges is not None:
            await self._bridges.operator_message(message)
        return message

    async def emit_event(self, session_id: str, name: str, /, **data: Any) -> Event:
        """Push a custom event to the visitor's open widgets (WebSocket and SSE), where the
        page's ``onEvent`` handlers receive it: ``emit_event(sid, "show_offer", discount=20)``."""
        if not isinstance(name, str) or not name:
            raise InvalidInput("event name must be a non-empty string")
        try:
            _dumps(data)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"event data must be JSON-serialisable: {exc}") from None
        await self._session(session_id)
        event = Event(name, data, session_id=session_id)
        self.publish(session_id, "event", event.to_wire())
        return event

    # -- more of the operator side ----------------------------------------------------------

    async def send_typing(self, session_id: str, is_typing: bool = True, *, sender: str = "operator") -> None:
        """Show (or hide) the typing dots in the visitor's widget; they clear by themselves
        after 5 s or when a message is sent."""
        if sender not in ("operator", "ai"):
            raise InvalidInput("sender must be 'operator' or 'ai'")
        await self._session(session_id)
        self._stop_typing(session_id, announce=False)
        self.publish(session_id, "typing", {"isTyping": is_typing, "sender": sender, "sessionId": session_id})
        if is_typing:
            loop = asyncio.get_running_loop()
            self._typing_timers[session_id] = loop.call_later(TYPING_TTL, self._stop_typing, session_id)

    def _stop_typing(self, session_id: str, announce: bool = True) -> None:
        timer = self._typing_timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
            if announce:
                self.publish(session_id, "typing", {"isTyping": False, "sender": "operator", "sessionId": session_id})

    async def set_operator_online(self, online: bool) -> None:
        """Operator presence: the widget's "Active now" header; pushed to every open widget."""
        self.operator_online = bool(online)
        self.publish(None, "presence", {"online": self.operator_online})

    async def edit_message(self, session_id: str, message_id: str, content: str) -> Message:
        """Change a message's text; open widgets show it as edited."""
        content = self._check_content(content)
        await self._session(session_id)
        return await self._edit(session_id, message_id, content)

    async def delete_message(self, session_id: str, message_id: str) -> Message:
        """Soft-delete a message; open widgets show "Message deleted"."""
        await self._session(session_id)
        return await self._delete(session_id, message_id)

    async def mark_read(self, session_id: str, message_ids: Sequence[str], status: str = "read") -> list[Message]:
        """Mark messages ``read`` (or ``delivered``); pushes a ``read`` receipt."""
        if status not in ("read", "delivered"):
            raise InvalidInput("status must be 'read' or 'delivered'")
        await self._session(session_id)
        return await self._mark(session_id, message_ids, status, senders=SENDERS)

    # -- what the widget endpoints do -------------------------------------------------------

    async def _edit(self, session_id: str, message_id: str, content: str, *, visitor: bool = False) -> Message:
        message = await self.storage.get_message(session_id, message_id)
        if message is None:
            raise MessageNotFound(message_id)
        if visitor and message.sender != "visitor":
            raise Forbidden("visitors can only edit their own messages")
        if message.deleted_at is not None:
            raise Forbidden("a deleted message cannot be edited")
        updated = await self.storage.update_message(session_id, message_id, {"content": content, "edited_at": STAMP})
        if updated is None:
            raise MessageNotFound(message_id)
        assert updated.edited_at is not None
        self.publish(
            session_id,
            "message_edited",
            {"messageId": message_id, "content": content, "editedAt": iso(updated.edited_at), "sessionId": session_id},
            iso(updated.cursor),
        )
        if self._bridges is not None:
            await self._bridges.message_changed(updated)
        return updated

    async def _delete(self, session_id: str, message_id: str, *, visitor: bool = False) -> Message:
        message = await self.storage.get_message(session_id, message_id)
        if message is None:
            raise MessageNotFound(message_id)
        if visitor and message.sender != "visitor":
            raise Forbidden("visitors can only delete their own messages")
        if message.deleted_at is not None:
            return message
        updated = await self.storage.update_message(session_id, message_id, {"deleted_at": STAMP})
        if updated is None:
            raise MessageNotFound(message_id)
        assert updated.deleted_at is not None
        self.publish(
            session_id,
            "message_deleted",
            {"messageId": message_id, "deletedAt": iso(updated.deleted_at), "sessionId": session_id},
            iso(updated.cursor),
        )
        if self._bridges is not None:
            await self._bridges.message_changed(updated)
        return updated

    async def _mark(
        self, session_id: str, message_ids: Sequence[str], status: str, *, senders: frozenset[str] | set[str]
    ) -> list[Message]:
        field = "read_at" if status == "read" else "delivered_at"
        changed: list[Message] = []
        for mid in dict.fromkeys(message_ids):
            message = await self.storage.get_message(session_id, mid)
            if message is None or message.sender not in senders:
                continue
            if message.status == "read" or (status == "delivered" and message.status == "delivered"):
                continue
            updated = await self.storage.update_message(session_id, mid, {"status": status, field: STAMP})
            if updated is not None:
                changed.append(updated)
        if changed:
            at = getattr(changed[-1], field)
            data: dict[str, Any] = {
                "messageIds": [m.id for m in changed],
                "status": status,
                "sessionId": session_id,
                ("readAt" if status == "read" else "deliveredAt"): iso(at),
            }
            self.publish(session_id, "read", data, iso(changed[-1].cursor))
        return changed

    async def _connect(
        self, visitor_id: str, session_id: str | None, metadata: dict[str, Any], identity: dict[str, Any] | None
    ) -> tuple[Session, bool, list[Message]]:
        session = None
        if session_id:
            session = await self.storage.get_session(session_id)
        if session is None:
            session = await self.storage.find_session_by_visitor(visitor_id)
        created = session is None
        if session is None:
            now = datetime.now(UTC)
            session = Session(
                id=new_id("sess"),
                visitor_id=visitor_id,
                created_at=now,
                last_activity=now,
                metadata=metadata,
                identity=identity or None,
            )
            await self.storage.create_session(session)
            messages: list[Message] = []
        else:
            changed = False
            if metadata and metadata != session.metadata:
                session.metadata = {**session.metadata, **metadata}
                changed = True
            if identity and identity != session.identity:
                session.identity = identity
                changed = True
            if changed:
                await self._try_update_session(session)
            messages = await self.storage.get_messages(session.id)
        if created:
            if self._bridges is not None:
                await self._bridges.session_started(session)
            self._dispatch("session_start", session)
        return session, created, messages

    async def _try_update_session(self, session: Session) -> None:
        from .errors import StorageCapabilityError

        try:
            await self.storage.update_session(session)
        except StorageCapabilityError as exc:
            log.debug("session %s not updated: %s", session.id, exc)

    async def _visitor_message(
        self, session_id: str, content: str, attachment_ids: list[str], reply_to: str | None
    ) -> Message:
        self._check_content(content, allow_empty=bool(attachment_ids))
        if not content.strip() and not attachment_ids:
            raise InvalidInput("content must not be empty")
        session = await self._session(session_id)
        attachments = []
        if attachment_ids:
            attachments = await self._attachments(session_id, attachment_ids)
        message = Message(
            id=new_id("msg"),
            session_id=session_id,
            content=content,
            sender="visitor",
            created_at=datetime.now(UTC),
            reply_to=reply_to,
            attachments=attachments,
        )
        message = await self.storage.save_message(session_id, message)
        self._publish_message(message)
        if self._bridges is not None:
            await self._bridges.visitor_message(session, message, reopened=session.status == "closed")
        if session.status == "closed":
            session.status = "active"
            session.closed_at = None
            await self._try_update_session(session)
        self._dispatch("message", session, message)
        return message

    async def _attachments(self, session_id: str, attachment_ids: list[str]) -> list[Attachment]:
        from .files import attachment_from_meta

        found = []
        for attachment_id in dict.fromkeys(attachment_ids):
            meta = await self.files.meta(attachment_id)
            if meta is None or meta["session_id"] != session_id or meta["status"] != "ready":
                raise InvalidInput(f"attachment {attachment_id!r} is not an uploaded file of this session")
            found.append(attachment_from_meta(meta, meta.get("url", "")))
        return found

    async def _visitor_typing(self, session_id: str, is_typing: bool) -> None:
        await self._session(session_id)
        now = time.monotonic()
        if is_typing and now - self._visitor_typing_at.get(session_id, 0.0) < VISITOR_TYPING_INTERVAL:
            return
        self._visitor_typing_at[session_id] = now if is_typing else 0.0
        # Widgets ignore visitor typing; the console and bridges use it.
        self.publish(ALL, "typing", {"isTyping": is_typing, "sender": "visitor", "sessionId": session_id})

    async def _widget_event(self, session: Session, event: Event) -> None:
        self.publish(ALL, "event", event.to_wire())
        self._dispatch("event", session, event)
