"""The chat service: every conversation operation, visitor side and operator side, once.

Every entry point is a thin caller of :class:`ChatService`: the widget's HTTP routes and
streams (``web/``), the operator console, the bridges' inbound paths, the bridge server and
``PocketPing``'s own API (and through it ``pp.sync``). Each operation validates its input,
stores first, then tells the rest of the world, in this order:

1. the session's open streams, on this process and through the broker on every other;
2. the :class:`ChatListener` objects (the bridges' outbox), awaited: queued work is durable
   before the caller is answered;
3. the user's hooks, queued on the session's lane (:mod:`pocketping.hooks`).

Policy that later applies to every entry point (limits, bans, identity checks) belongs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from . import retention
from .bans import Ban, BanBook
from .bans import address_value as ban_address_value
from .bans import user_value as ban_user_value
from .errors import (
    AttachmentNotFound,
    Forbidden,
    InvalidInput,
    MessageNotFound,
    SessionNotFound,
    StorageCapabilityError,
)
from .files import attachment_from_meta
from .hooks import HookRunner
from .hours import BusinessHours
from .models import SENDERS, Attachment, Event, Message, Session, compact_json, iso, new_id, parse_time, to_ms
from .policy import Policy
from .protocol import plain_object
from .ratelimits import Limiter
from .realtime.fanout import Fanout
from .realtime.hub import ALL, Broker, Hub
from .stats import Stats
from .stats import from_figures as stats_from_figures
from .stats import window as stats_window
from .storage.base import STAMP, BaseStorage

log = logging.getLogger("pocketping")

OPERATOR_TYPES = ("operator", "ai", "system")
#: Senders whose messages a visitor may mark read (their own are marked by operators).
VISITOR_READS = frozenset(OPERATOR_TYPES)
TYPING_TTL = 5.0
VISITOR_TYPING_INTERVAL = 2.0


class Connection(NamedTuple):
    """What :meth:`ChatService.connect` found or made."""

    session: Session
    created: bool
    messages: list[Message]


class ChatListener:
    """Told about each stored change, after it is stored and before the caller is answered.

    The bridges' outbox is one; subclasses override what they need. ``source`` names the
    bridge a change came from, so that it is not echoed back there.
    """

    async def session_started(self, session: Session) -> None:
        pass

    async def visitor_message(self, session: Session, message: Message, reopened: bool = False) -> None:
        pass

    async def operator_message(self, message: Message) -> None:
        pass

    async def message_changed(self, message: Message) -> None:
        pass

    async def session_closed(self, session: Session, skip: str | None = None) -> None:
        pass

    async def event_received(self, session: Session, event: Event) -> None:
        """A custom event from the widget."""

    async def visitor_identified(self, session: Session) -> None:
        """The visitor's identity was set or changed (``identify``)."""

    async def rating_received(self, session: Session, rating: dict[str, Any]) -> None:
        """The visitor rated the conversation (``{"score", "comment"?}``)."""

    async def sessions_erased(self, session_ids: Sequence[str]) -> None:
        """These sessions were erased (``forget``, ``purge``): drop all work about them."""

    async def recover(self, session: Session, messages: list[Message]) -> None:
        """At start, the session's recent messages (``Outbox.recover_recent``): queue again what a
        process killed between storing a message and queueing its jobs left out. Idempotent:
        jobs found done are skipped."""

    async def operator_note(self, session_id: str, text: str, key: str) -> None:
        """A note for the operators only (the AI's handoff reason), never shown to the visitor;
        ``key`` identifies it (idempotent delivery)."""


class ChatService:
    """Conversations: sessions, messages, receipts, typing, presence, events.

    ``files`` is the attachment store (:class:`~pocketping.files.LocalFileStore` or one with
    its methods); ``max_message_length`` bounds every message text.
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        files: Any,
        hooks: HookRunner | None = None,
        hub: Hub | None = None,
        broker: Broker | None = None,
        policy: Policy | None = None,
        limiter: Limiter | None = None,
        max_message_length: int = 4000,
    ) -> None:
        if max_message_length < 1:
            raise InvalidInput("max_message_length must be at least 1")
        self.storage = storage
        self.files = files
        self.policy = policy or Policy()
        #: Bans by client address and by verified user id (``pp.ban_address``, ``pp.ban_user``).
        self.bans = BanBook(storage)
        self.policy.bans = self.bans
        #: The rate limits (:class:`~pocketping.RateLimits`); none unless given.
        self.limiter = limiter or Limiter(None)
        self.hooks = hooks or HookRunner()
        self.fanout = Fanout(hub or Hub(), broker)
        self.hub = self.fanout.hub
        self.max_message_length = max_message_length
        self.listeners: list[ChatListener] = []
        self.operator_online = False
        #: Opening hours (:class:`~pocketping.BusinessHours`); None: someone answers later.
        self.business_hours: BusinessHours | None = None
        #: Sent once per session as a ``system`` message when a visitor writes while nobody
        #: is reachable (None: nothing is sent).
        self.offline_message: str | None = None
        #: Seconds after which operator typing dots clear by themselves.
        self.typing_ttl = TYPING_TTL
        self._typing_timers: dict[str, asyncio.TimerHandle] = {}
        # One write order per session (and per visitor for first connects): a read-modify-write
        # of a session row or message never interleaves with another on this process.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # When each session's visitor last said it was typing, in two generations swapped every
        # VISITOR_TYPING_INTERVAL: only sessions that typed lately are remembered.
        self._typing_now: dict[str, float] = {}
        self._typing_before: dict[str, float] = {}
        self._typing_turned_at = time.monotonic()

    def lock(self, key: str) -> asyncio.Lock:
        """The lock that orders changes to ``key`` (a session id, or ``visitor:<id>``)."""
        found = self._locks.get(key)
        if found is None:
            found = self._locks[key] = asyncio.Lock()
        return found

    @contextlib.asynccontextmanager
    async def locked(self, sessions: Sequence[Session], *, visitors: bool = True) -> AsyncIterator[None]:
        """Hold the locks of these sessions and (``visitors``) of their visitors, visitors
        first as ``connect`` takes them, so no change to them on this process runs meanwhile."""
        keys = sorted({f"visitor:{s.visitor_id}" for s in sessions}) if visitors else []
        keys += sorted({s.id for s in sessions})
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                await stack.enter_async_context(self.lock(key))
            yield

    def forget_sessions(self, session_ids: Iterable[str]) -> None:
        """Drop what this process keeps in memory about erased sessions: streams, typing,
        hook calls still waiting."""
        session_ids = list(session_ids)
        self.hooks.discard(session_ids)
        for sid in session_ids:
            self.hub.close_channel(sid)
            self._typing_now.pop(sid, None)
            self._typing_before.pop(sid, None)
            timer = self._typing_timers.pop(sid, None)
            if timer is not None:
                timer.cancel()

    # -- fan-out ----------------------------------------------------------------------------

    def publish(self, session_id: str | None, type: str, data: dict[str, Any], event_id: str | None = None) -> None:
        """Push ``{"type", "data"}`` to the session's open streams (``None``: all streams)."""
        self.fanout.publish(session_id, type, data, event_id)

    def stop(self) -> None:
        """Cancel typing timers (shutdown)."""
        for timer in self._typing_timers.values():
            timer.cancel()
        self._typing_timers.clear()

    # -- reading ----------------------------------------------------------------------------

    async def find_session(self, session_id: str) -> Session | None:
        """The session, or None."""
        if not isinstance(session_id, str) or not session_id:
            return None
        return await self.storage.get_session(session_id)

    async def get_session(self, session_id: str) -> Session:
        """The session, or :class:`SessionNotFound`."""
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInput("session_id must be a non-empty string")
        session = await self.storage.get_session(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    async def require_session(self, session_id: str) -> None:
        """:class:`SessionNotFound` unless the session exists (without building it)."""
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInput("session_id must be a non-empty string")
        if not await self.storage.has_session(session_id):
            raise SessionNotFound(session_id)

    async def list_sessions(self, *, limit: int | None = 100, include_closed: bool = False) -> list[Session]:
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be a positive integer or None")
        return await self.storage.list_sessions(limit=limit, include_closed=include_closed)

    async def get_messages(
        self, session_id: str, *, after: datetime | str | None = None, limit: int | None = None
    ) -> list[Message]:
        """Oldest first; ``after``: only those created or changed after it, in change order."""
        await self.require_session(session_id)
        cursor = None
        if after is not None:
            try:
                cursor = parse_time(after)
            except ValueError as exc:
                raise InvalidInput(f"after: {exc}") from None
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be a positive integer or None")
        return await self.storage.get_messages(session_id, after=cursor, limit=limit)

    async def catch_up(self, session_id: str, after: datetime | None, limit: int | None = None) -> list[Message]:
        """What a stream of an existing session missed since ``after`` (no existence check)."""
        return await self.storage.get_messages(session_id, after=after, limit=limit)

    async def get_message(self, session_id: str, message_id: str) -> Message | None:
        return await self.storage.get_message(session_id, message_id)

    # -- sessions ---------------------------------------------------------------------------

    async def connect(
        self,
        visitor_id: str,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        *,
        client_ip: str | None = None,
    ) -> Connection:
        """Resume the visitor's session (by id, else by visitor id) or start one. A banned
        visitor is refused (:class:`Forbidden`); an identity is checked (:class:`AuthError`); a
        new session counts against ``client_ip``'s ``sessions_per_ip`` (:class:`RateLimited`)."""
        verified = False
        if identity:
            identity, verified = self.policy.check_identity(identity)
            self._refuse_banned_user(identity, verified)
        async with self.lock(f"visitor:{visitor_id}"):  # simultaneous first connects make one session
            session = None
            if session_id:
                session = await self.storage.get_session(session_id)
            if session is None:
                session = await self.storage.find_session_by_visitor(visitor_id)
            if session is not None:
                self.refuse_banned(session)
                if _merge(session.copy(), metadata, identity, verified):
                    session = await self._update(
                        session.id, lambda s: _merge(s, metadata, identity, verified), best_effort=True
                    )
                return Connection(session, False, await self.storage.get_messages(session.id))
            await self.limiter.check_new_session(client_ip)
            now = datetime.now(UTC)
            session = Session(
                id=new_id("sess"),
                visitor_id=visitor_id,
                created_at=now,
                last_activity=now,
                metadata=dict(metadata or {}),
                identity=identity or None,
            )
            if identity:
                session.data["identity_verified"] = verified
            await self.storage.create_session(session)
        await self._started(session)
        return Connection(session, True, [])

    async def _update(
        self,
        session_id: str,
        change: Callable[[Session], object],
        *,
        by_visitor: bool = False,
        best_effort: bool = False,
    ) -> Session:
        """Apply ``change`` to the stored session under its lock (re-read first, so that
        simultaneous updates of different fields all land) and save it. ``by_visitor``: a
        banned session is refused; ``best_effort``: a storage that cannot update sessions is
        skipped (a resume's metadata) instead of refusing the call."""
        async with self.lock(session_id):
            session = await (self.visitor_session(session_id) if by_visitor else self.get_session(session_id))
            change(session)
            await (self._save_session(session) if best_effort else self.storage.update_session(session))
            return session

    async def mirror_session(self, incoming: Session) -> Session:
        """Record a session another PocketPing created (the bridge server's copy, same id);
        later copies merge their metadata and identity like a resume."""
        session = await self.storage.get_session(incoming.id)
        if session is None:
            await self.storage.create_session(incoming)
            await self._started(incoming)
            return incoming
        if _merge(session.copy(), incoming.metadata, incoming.identity, incoming.identity_verified):
            session = await self._update(
                session.id,
                lambda s: _merge(s, incoming.metadata, incoming.identity, incoming.identity_verified),
                best_effort=True,
            )
        return session

    async def _started(self, session: Session) -> None:
        for listener in self.listeners:
            await listener.session_started(session)
        self.hooks.dispatch("session_start", session.id, session)

    async def identify(self, session_id: str, identity: dict[str, Any]) -> Session:
        """Attach what the site knows of the visitor (``id`` required, then email, name, …)."""
        uid = identity.get("id") if isinstance(identity, dict) else None
        if not isinstance(uid, str) or not uid.strip():
            raise InvalidInput("identity.id is required and must be a non-empty string")
        identity, verified = self.policy.check_identity(identity)
        self._refuse_banned_user(identity, verified)

        def change(session: Session) -> None:
            session.identity = identity
            session.data["identity_verified"] = verified

        session = await self._update(session_id, change, by_visitor=True)
        for listener in self.listeners:
            await listener.visitor_identified(session)
        return session

    async def save_prechat(self, session_id: str, data: dict[str, Any]) -> Session:
        """Store the pre-chat form's answers (an email or a phone number at least)."""
        email, phone = data.get("email"), data.get("phone")
        if not email and not phone:
            raise InvalidInput("give an email or a phone number")
        if email and ("@" not in email or email.startswith("@") or email.endswith("@")):
            raise InvalidInput("email is not a valid address")
        return await self._update(
            session_id, lambda session: session.data.__setitem__("prechat", data), by_visitor=True
        )

    async def rate(self, session_id: str, score: int, comment: str | None = None) -> bool:
        """Store the visitor's satisfaction rating (once); False if it was already rated."""
        rating: dict[str, Any] = {"score": score}
        if comment and comment.strip():
            rating["comment"] = comment.strip()
        async with self.lock(session_id):
            session = await self.visitor_session(session_id)
            if "csat" in session.data:
                return False
            session.data["csat"] = rating
            await self.storage.update_session(session)
        for listener in self.listeners:
            await listener.rating_received(session, rating)
        await self._widget_event(session, Event("csat", rating, session_id=session.id))
        return True

    async def request_csat(self, session_id: str) -> datetime:
        """Ask the visitor to rate the conversation: the widget shows its rating card (a
        ``csat_request`` pushed to the session's open streams). Returns when it was asked."""
        async with self.lock(session_id):
            session = await self.visitor_session(session_id)
            at = datetime.now(UTC)
            session.data["csat_requested_at"] = iso(at)
            await self._save_session(session)
        self.publish(session_id, "csat_request", {"requestedAt": iso(at), "sessionId": session_id})
        return at

    async def close_session(self, session_id: str, *, source: str | None = None) -> Session:
        """Mark the session closed and announce it (event ``session_closed``); ``source``: the
        bridge the close came from, which is not told again."""
        async with self.lock(session_id):
            session = await self.get_session(session_id)
            closing = session.status != "closed"
            if closing:
                session.status = "closed"
                session.closed_at = datetime.now(UTC)
                await self.storage.update_session(session)
        if closing:
            for listener in self.listeners:
                await listener.session_closed(session, skip=source)
        self._stop_typing(session_id)
        event = Event("session_closed", {"sessionId": session_id}, session_id=session_id)
        self.publish(session_id, "event", event.to_wire())
        return session

    async def reopen_session(self, session: Session) -> bool:
        """Mark a closed session active again (a visitor wrote); False if it was not closed.
        The stored row is re-read, so the activity the new message gave it is kept."""
        async with self.lock(session.id):
            current = await self.find_session(session.id)
            if current is None or current.status != "closed":
                return False
            current.status = "active"
            current.closed_at = None
            await self._save_session(current)
        session.status, session.closed_at, session.last_activity = "active", None, current.last_activity
        return True

    def operator_reachable(self) -> bool:
        """Whether someone may answer soon: an operator is online, or it is within the opening
        hours (always, without ``business_hours``: an operator answers from a bridge later)."""
        return self.operator_online or self.business_hours is None or self.business_hours.is_open()

    async def _offline_notice(self, session_id: str) -> None:
        """The offline message, once per session, when a visitor writes while nobody is reachable."""
        if self.offline_message is None or self.operator_reachable():
            return
        async with self.lock(session_id):
            session = await self.find_session(session_id)
            if session is None or session.data.get("offline_notice"):
                return
            session.data["offline_notice"] = True
            await self.storage.update_session(session)
        await self.send_message(session_id, self.offline_message, type="system")

    def refuse_banned(self, session: Session) -> None:
        """:class:`Forbidden` when the session is banned, or its verified user is."""
        if session.banned:
            raise Forbidden("this visitor has been blocked by the site's operators")
        self._refuse_banned_user(session.identity, session.identity_verified)

    def _refuse_banned_user(self, identity: dict[str, Any] | None, verified: bool) -> None:
        if verified and identity and self.bans.user_banned(identity.get("id")):
            raise Forbidden("this user has been blocked by the site's operators")

    async def visitor_session(self, session_id: str) -> Session:
        """The session a visitor request is about: :class:`SessionNotFound`, or
        :class:`Forbidden` when it is banned."""
        session = await self.get_session(session_id)
        self.refuse_banned(session)
        return session

    async def ban(
        self, session_id: str, *, address: bool = False, user: bool = False, reason: str | None = None
    ) -> Session:
        """The session can no longer post and its visitor can no longer resume it (stored: it
        holds across processes and restarts); its open streams end. ``address``: also ban the
        session's client address (an IPv6 client's whole prefix); ``user``: also ban its
        verified user id (:class:`InvalidInput` when it has none)."""
        session = await self.get_session(session_id)
        extra = self._ban_targets(session, address, user)
        for kind, value in extra:
            await self.bans.add(kind, value, reason)
        return await self._set_banned(session_id, True, {kind: value for kind, value in extra})

    async def unban(self, session_id: str, *, address: bool = False, user: bool = False) -> Session:
        """Undo :meth:`ban` (with ``address`` / ``user``: the address and user bans it made)."""
        session = await self.get_session(session_id)
        made = session.data.get("bans_made") or {}
        for kind, wanted in (("address", address), ("user", user)):
            if wanted:
                value = made.get(kind) or dict(self._ban_targets(session, kind == "address", kind == "user"))[kind]
                await self.bans.remove(kind, value)
        return await self._set_banned(session_id, False)

    def _ban_targets(self, session: Session, address: bool, user: bool) -> list[tuple[str, str]]:
        targets = []
        if address:
            ip = session.metadata.get("ip") if isinstance(session.metadata, dict) else None
            key = self.policy.client_key(ip if isinstance(ip, str) else None)
            if not key:
                raise InvalidInput("this session has no client address to ban")
            if self.policy.is_trusted_proxy(ip):
                raise InvalidInput(
                    f"the session's address {ip} is one of trusted_proxies: banning it would refuse every visitor "
                    "(is client_ip_header the header your proxy sets?)"
                )
            targets.append(("address", ban_address_value(key)))
        if user:
            uid = (session.identity or {}).get("id")
            if not session.identity_verified or not isinstance(uid, str) or not uid:
                raise InvalidInput("this session has no verified user id to ban (see identity_secret)")
            targets.append(("user", uid))
        return targets

    async def ban_address(self, address: str, *, reason: str | None = None) -> Ban:
        """Refuse every widget request from ``address`` (an address or CIDR range; a single
        IPv6 address bans its ``ipv6_prefix``, as clients are counted), on every process (within
        :data:`~pocketping.bans.REFRESH` seconds) and after restarts."""
        return await self.bans.add("address", self._address_ban(address), reason)

    async def unban_address(self, address: str) -> bool:
        """Lift an address ban (the same address or range as banned); False if there was none."""
        return await self.bans.remove("address", self._address_ban(address))

    def _address_ban(self, address: str) -> str:
        value = ban_address_value(address)
        if ":" in value and value.endswith("/128"):  # one IPv6 address: its client's prefix
            value = ban_address_value(self.policy.client_key(value.removesuffix("/128")) or value)
        return value

    async def ban_user(self, user_id: str, *, reason: str | None = None) -> Ban:
        """Refuse the verified user ``user_id`` (an identity your server signed) on every
        session, now and later; identities that are not verified are not matched."""
        return await self.bans.add("user", ban_user_value(user_id), reason)

    async def unban_user(self, user_id: str) -> bool:
        return await self.bans.remove("user", ban_user_value(user_id))

    def list_bans(self) -> list[Ban]:
        """The address and user bans in force (session bans are stored with each session)."""
        return self.bans.list()

    async def _set_banned(self, session_id: str, banned: bool, made: dict[str, str] | None = None) -> Session:
        async with self.lock(session_id):
            session = await self.get_session(session_id)
            if session.banned != banned or made:
                if banned:
                    session.data["banned"] = True
                    if made:  # what unban(address=, user=) lifts, whatever the session becomes
                        session.data["bans_made"] = {**(session.data.get("bans_made") or {}), **made}
                else:
                    session.data.pop("banned", None)
                    session.data.pop("bans_made", None)
                await self.storage.update_session(session)
        if banned:
            self.hub.close_channel(session_id)
        return session

    # -- statistics (pocketping.stats) --------------------------------------------------------

    async def get_stats(self, since: datetime | str | None = None, until: datetime | str | None = None) -> Stats:
        """Conversations started in ``[since, until)`` (default: the last 30 days) and what
        happened in them; aggregated by the storage."""
        try:
            start, end = stats_window(since, until)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"since / until: {exc}") from None
        if end <= start:
            raise InvalidInput("until must be after since")
        figures = await self.storage.conversation_stats(to_ms(start), to_ms(end))
        return stats_from_figures(start, end, figures)

    # -- erasure and retention (pocketping.retention) ---------------------------------------

    async def export(self, visitor_id: str) -> dict[str, Any]:
        """Everything stored about the visitor, JSON-serialisable."""
        return await retention.export(self, visitor_id)

    async def forget(self, visitor_id: str) -> retention.Removed:
        """Erase the visitor everywhere: sessions, messages, files, bridge rows and mappings."""
        return await retention.forget(self, visitor_id)

    async def purge(self, before: datetime | str) -> retention.Removed:
        """Erase every session idle since before ``before``."""
        return await retention.purge(self, before)

    async def _save_session(self, session: Session) -> None:
        try:
            await self.storage.update_session(session)
        except StorageCapabilityError as exc:
            log.debug("session %s not updated: %s", session.id, exc)

    # -- messages ---------------------------------------------------------------------------

    def check_content(self, content: Any, *, allow_empty: bool = False) -> str:
        """The message text if it is acceptable, else :class:`InvalidInput` saying why."""
        if not isinstance(content, str):
            raise InvalidInput(f"content must be a string, not {type(content).__name__}")
        if not allow_empty and not content.strip():
            raise InvalidInput("content must not be empty")
        if len(content) > self.max_message_length:
            raise InvalidInput(f"content is {len(content)} characters long; the limit is {self.max_message_length}")
        return content

    async def visitor_message(
        self,
        session_id: str,
        content: str,
        attachment_ids: Sequence[str] = (),
        reply_to: str | None = None,
        *,
        source: str | None = None,
    ) -> Message:
        """Store a message from the visitor (reopening a closed session) and relay it;
        ``source``: where it came from when not the widget (``email``), kept in its metadata."""
        self.check_content(content, allow_empty=bool(attachment_ids))
        if not content.strip() and not attachment_ids:
            raise InvalidInput("content must not be empty")
        session = await self.visitor_session(session_id)
        await self.limiter.check_message(session_id)
        attachments = await self._attachments(session_id, attachment_ids) if attachment_ids else []
        message = Message(
            id=new_id("msg"),
            session_id=session_id,
            content=content,
            sender="visitor",
            created_at=datetime.now(UTC),
            reply_to=reply_to,
            attachments=attachments,
            metadata={"source": source} if source else {},
        )
        message = await self._store_and_publish(session_id, message)
        await self._visitor_message_stored(session, message)
        if self.offline_message is not None:
            await self._offline_notice(session_id)
        return message

    async def _store_and_publish(self, session_id: str, message: Message) -> Message:
        """Store, then push, under the session's lock: streams get a session's changes in
        stamp order, so a client that resumes after the last id it saw misses none."""
        async with self.lock(session_id):
            message = await self.storage.save_message(session_id, message)
            self.fanout.publish_message(message)
        return message

    async def _visitor_message_stored(self, session: Session, message: Message) -> None:
        reopened = session.status == "closed"
        for listener in self.listeners:
            await listener.visitor_message(session, message, reopened=reopened)
        if reopened:
            await self.reopen_session(session)
        self.hooks.dispatch("message", session.id, session, message)

    async def send_message(
        self,
        session_id: str,
        content: Any,
        *,
        type: str = "operator",
        reply_to: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        """Store a message from the operator side (operator, ai or system) and push it."""
        if type not in OPERATOR_TYPES:
            raise InvalidInput(f"type must be one of {', '.join(OPERATOR_TYPES)}, not {type!r}")
        content = self.check_content(content)
        await self.require_session(session_id)
        message = Message(
            id=new_id("msg"),
            session_id=session_id,
            content=content,
            sender=type,
            created_at=datetime.now(UTC),
            reply_to=reply_to,
            metadata=dict(metadata or {}),
        )
        self._stop_typing(session_id, announce=False)
        message = await self._store_and_publish(session_id, message)
        for listener in self.listeners:
            await listener.operator_message(message)
        return message

    async def mirror_message(self, session: Session, incoming: Message) -> Message | None:
        """Record a message another PocketPing stored (same id; the bridge server's copy).
        None if it is already here (a retried delivery)."""
        if await self.storage.get_message(session.id, incoming.id) is not None:
            return None
        incoming.session_id = session.id
        message = await self._store_and_publish(session.id, incoming)
        if message.sender == "visitor":
            await self._visitor_message_stored(session, message)
        else:
            for listener in self.listeners:
                await listener.operator_message(message)
        return message

    async def _attachments(self, session_id: str, attachment_ids: Sequence[str]) -> list[Attachment]:
        found = []
        for attachment_id in dict.fromkeys(attachment_ids):
            meta = await self.files.meta(attachment_id)
            if meta is None or meta["session_id"] != session_id or meta["status"] != "ready":
                raise InvalidInput(f"attachment {attachment_id!r} is not an uploaded file of this session")
            found.append(attachment_from_meta(meta, meta.get("url", "")))
        return found

    async def edit_message(
        self, session_id: str, message_id: str, content: Any, *, by_visitor: bool = False
    ) -> Message:
        """Change a message's text (``by_visitor``: only the visitor's own, not deleted)."""
        content = self.check_content(content)
        async with self.lock(session_id):  # an edit never lands after the delete it raced
            message = await self._changeable(session_id, message_id, by_visitor, "edit")
            if message.deleted_at is not None:
                raise Forbidden("a deleted message cannot be edited")
            changes = {"content": content, "edited_at": STAMP}
            updated = await self.storage.update_message(session_id, message_id, changes)
            if updated is None:
                raise MessageNotFound(message_id)
            assert updated.edited_at is not None
            data = {
                "messageId": message_id,
                "content": content,
                "editedAt": iso(updated.edited_at),
                "sessionId": session_id,
            }
            self.publish(session_id, "message_edited", data, iso(updated.cursor))
        await self._changed(updated)
        return updated

    async def delete_message(self, session_id: str, message_id: str, *, by_visitor: bool = False) -> Message:
        """Soft-delete a message (``by_visitor``: only the visitor's own). Deleting twice is a no-op."""
        async with self.lock(session_id):
            message = await self._changeable(session_id, message_id, by_visitor, "delete")
            if message.deleted_at is not None:
                return message
            updated = await self.storage.update_message(session_id, message_id, {"deleted_at": STAMP})
            if updated is None:
                raise MessageNotFound(message_id)
            assert updated.deleted_at is not None
            data = {"messageId": message_id, "deletedAt": iso(updated.deleted_at), "sessionId": session_id}
            self.publish(session_id, "message_deleted", data, iso(updated.cursor))
        await self._changed(updated)
        return updated

    async def _changeable(self, session_id: str, message_id: str, by_visitor: bool, verb: str) -> Message:
        if by_visitor:
            await self.visitor_session(session_id)
        else:
            await self.require_session(session_id)
        message = await self.storage.get_message(session_id, message_id)
        if message is None:
            raise MessageNotFound(message_id)
        if by_visitor and message.sender != "visitor":
            raise Forbidden(f"visitors can only {verb} their own messages")
        return message

    async def _changed(self, message: Message) -> None:
        for listener in self.listeners:
            await listener.message_changed(message)

    async def mark_read(
        self, session_id: str, message_ids: Iterable[str], status: str = "read", *, by_visitor: bool = False
    ) -> list[Message]:
        """Mark messages ``read`` or ``delivered`` (``by_visitor``: only the operator side's)
        and push one receipt. Returns the messages that changed."""
        if status not in ("read", "delivered"):
            raise InvalidInput("status must be 'read' or 'delivered'")
        await (self.visitor_session(session_id) if by_visitor else self.require_session(session_id))
        senders = VISITOR_READS if by_visitor else SENDERS
        field = "read_at" if status == "read" else "delivered_at"
        async with self.lock(session_id):  # receipts reach streams in stamp order too
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

    # -- uploads ----------------------------------------------------------------------------

    async def start_upload(self, session_id: str, filename: str, mime_type: str, size: int) -> dict[str, Any]:
        """Reserve an attachment of the session; returns its metadata (``id`` among it)."""
        await self.visitor_session(session_id)
        meta: dict[str, Any] = await self.files.create(session_id, filename, mime_type.lower(), size)
        await self._upload_still_allowed(session_id)
        return meta

    async def upload_session(self, attachment_id: str) -> str:
        """The session an unfinished upload belongs to, if its visitor may still upload
        (:class:`SessionNotFound`, :class:`Forbidden` when banned, :class:`InvalidInput` when
        there is no such upload)."""
        meta = await self.files.meta(attachment_id)
        if meta is None:
            raise InvalidInput(f"no pending upload {attachment_id!r}")
        session_id = str(meta["session_id"])
        await self.visitor_session(session_id)
        return session_id

    async def write_upload(self, attachment_id: str, data: bytes) -> dict[str, Any]:
        """Store the bytes of an unfinished upload (``PUT /upload/{id}``)."""
        session_id = await self.upload_session(attachment_id)
        meta: dict[str, Any] = await self.files.write(attachment_id, data)
        await self._upload_still_allowed(session_id)
        return meta

    async def complete_upload(self, session_id: str, attachment_id: str, url: str) -> Attachment:
        """Mark an uploaded attachment ready, reachable at ``url``."""
        await self.visitor_session(session_id)
        meta = await self.files.meta(attachment_id)
        if meta is None or meta["session_id"] != session_id:
            raise InvalidInput(f"no upload {attachment_id!r} in this session")
        meta = await self.files.complete(attachment_id, url=url)
        await self._upload_still_allowed(session_id)
        return attachment_from_meta(meta, url)

    async def readable_attachment(self, attachment_id: str) -> dict[str, Any]:
        """The metadata of a finished attachment that may be served (``GET
        /attachments/{id}``): :class:`AttachmentNotFound` when there is none, or its session
        is gone; :class:`Forbidden` when its session is banned."""
        meta: dict[str, Any] | None = await self.files.meta(attachment_id)
        if meta is None or meta.get("status") != "ready":
            raise AttachmentNotFound(attachment_id)
        session = await self.storage.get_session(str(meta["session_id"]))
        if session is None:
            raise AttachmentNotFound(attachment_id)
        self.refuse_banned(session)
        return meta

    async def _upload_still_allowed(self, session_id: str) -> None:
        """Checked again after each upload step has written: an erasure that ran meanwhile
        (it deletes the rows, then the files) may have missed what this step wrote, so the
        session's files are removed again and the step fails; a ban refuses it."""
        session = await self.storage.get_session(session_id)
        if session is None:
            erase_files = getattr(self.files, "delete_sessions", None)
            if erase_files is not None:
                await erase_files([session_id])
            raise SessionNotFound(session_id)
        self.refuse_banned(session)

    # -- typing, presence, events -----------------------------------------------------------

    async def visitor_typing(self, session_id: str, is_typing: bool) -> None:
        """Tell operators the visitor is typing (at most every 2 s while it goes on)."""
        await self.visitor_session(session_id)
        now = time.monotonic()
        if now - self._typing_turned_at >= VISITOR_TYPING_INTERVAL:
            # Older entries are past the interval: forget them.
            self._typing_before, self._typing_now = self._typing_now, {}
            self._typing_turned_at = now
        last = self._typing_now.get(session_id) or self._typing_before.get(session_id) or 0.0
        if is_typing and now - last < VISITOR_TYPING_INTERVAL:
            return
        if is_typing:
            self._typing_now[session_id] = now
        else:
            self._typing_now.pop(session_id, None)
            self._typing_before.pop(session_id, None)
        # Widgets ignore visitor typing; the console and bridges use it.
        self.publish(ALL, "typing", {"isTyping": is_typing, "sender": "visitor", "sessionId": session_id})

    async def operator_typing(self, session_id: str, is_typing: bool = True, *, sender: str = "operator") -> None:
        """Show (or hide) the typing dots in the visitor's widget; they clear by themselves
        after 5 s or when a message is sent."""
        if sender not in ("operator", "ai"):
            raise InvalidInput("sender must be 'operator' or 'ai'")
        await self.require_session(session_id)
        self._stop_typing(session_id, announce=False)
        self.publish(session_id, "typing", {"isTyping": is_typing, "sender": sender, "sessionId": session_id})
        if is_typing:
            loop = asyncio.get_running_loop()
            self._typing_timers[session_id] = loop.call_later(self.typing_ttl, self._stop_typing, session_id)

    def _stop_typing(self, session_id: str, announce: bool = True) -> None:
        timer = self._typing_timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
            if announce:
                self.publish(session_id, "typing", {"isTyping": False, "sender": "operator", "sessionId": session_id})

    async def note_for_operators(self, session_id: str, text: str, *, key: str) -> None:
        """Show ``text`` in the operators' threads and consoles, not to the visitor."""
        for listener in self.listeners:
            await listener.operator_note(session_id, text, key)
        self.publish(ALL, "note", {"sessionId": session_id, "text": text})

    async def set_operator_online(self, online: bool) -> None:
        """Operator presence, pushed to every open widget."""
        self.operator_online = bool(online)
        self.publish(None, "presence", {"online": self.operator_online})

    async def widget_event(
        self, session_id: str, name: str, data: dict[str, Any] | None = None, timestamp: datetime | None = None
    ) -> Event | None:
        """A custom event from the widget: to the console and ``on_event``. None if the
        session is gone."""
        session = await self.find_session(session_id)
        if session is None or session.banned:
            return None
        event = Event(name, data or {}, timestamp or datetime.now(UTC), session_id)
        for listener in self.listeners:
            await listener.event_received(session, event)
        await self._widget_event(session, event)
        return event

    async def _widget_event(self, session: Session, event: Event) -> None:
        self.publish(ALL, "event", event.to_wire())
        self.hooks.dispatch("event", session.id, session, event)

    async def emit_event(self, session_id: str, name: str, data: dict[str, Any]) -> Event:
        """Push a custom event to the visitor's open widgets."""
        if not isinstance(name, str) or not name:
            raise InvalidInput("event name must be a non-empty string")
        try:
            compact_json(data)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"event data must be JSON-serialisable: {exc}") from None
        await self.require_session(session_id)
        event = Event(name, data, session_id=session_id)
        self.publish(session_id, "event", event.to_wire())
        return event


def _merge(session: Session, metadata: dict[str, Any] | None, identity: dict[str, Any] | None, verified: bool) -> bool:
    """Fold a resume's metadata and identity into the session; True if anything changed."""
    changed = False
    if metadata and metadata != session.metadata:
        merged = {**session.metadata, **metadata}
        try:
            plain_object(merged)
        except ValueError as exc:
            raise InvalidInput(f"metadata: the session's metadata would grow past its bounds ({exc})") from None
        session.metadata = merged
        changed = True
    if identity and (identity != session.identity or verified != session.identity_verified):
        session.identity = identity
        session.data["identity_verified"] = verified
        changed = True
    return changed
