"""The storage interface and the adapter that makes any duck-typed storage fit it.

A storage only *needs* the four methods of the seed documentation::

    create_session(session)            get_session(session_id) -> row | None
    save_message(session_id, message)  get_messages(session_id) -> [row, ...]

Each may be a plain or an ``async`` method and may return plain dicts (a database row, say):
PocketPing turns them into models. Optional methods add capabilities; where one is missing,
only the calls that need it fail, with :class:`~pocketping.errors.StorageCapabilityError`
naming the method:

    get_messages(session_id, after=..., limit=...)   paging done by the storage
    update_session(session)                          close_session, metadata, identify, …
    list_sessions(limit=..., include_closed=...)     get_sessions (``get_sessions()`` also works)
    find_session_by_visitor(visitor_id)              resume a visitor whose session id was lost
    get_message(session_id, message_id)              faster single-message lookups
    update_message(session_id, message)              edits, deletes, read receipts
    outbox_add / outbox_claim / outbox_done /        the bridges' durable delivery queue and
    outbox_retry / outbox_next_due, bridge_key_get /  their key-value map (threads, message ids,
    bridge_key_set / bridge_key_delete               seen update ids); see pocketping.bridges
    find_sessions_by_visitor(visitor_id)             export() and forget(): all of a visitor's sessions
    list_inactive_sessions(before, limit=...)        purge() and retention_days: ids of sessions idle
                                                     since before ``before``
    delete_sessions(session_ids)                     forget() and purge(): sessions with their
                                                     messages, bridge outbox rows and bridge keys
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import anyio.to_thread

from ..errors import SessionNotFound, StorageCapabilityError
from ..models import Message, Session, from_ms, now_ms, to_ms

#: Placeholder in :meth:`BaseStorage.update_message` ``changes``: replaced by the change stamp.
STAMP: Any = object()


class BaseStorage:
    """What PocketPing's core calls. Built-in storages implement all of it natively."""

    async def open(self) -> None:
        """Prepare the storage (create the schema, open connections)."""

    async def close(self) -> None:
        """Release connections."""

    async def create_session(self, session: Session) -> None:
        raise StorageCapabilityError(self, "create_session", "creating a session")

    async def get_session(self, session_id: str) -> Session | None:
        raise StorageCapabilityError(self, "get_session", "reading a session")

    async def update_session(self, session: Session) -> None:
        raise StorageCapabilityError(self, "update_session", "changing a session")

    async def list_sessions(self, *, limit: int | None = None, include_closed: bool = False) -> list[Session]:
        raise StorageCapabilityError(self, "list_sessions", "get_sessions()")

    async def find_session_by_visitor(self, visitor_id: str) -> Session | None:
        return None

    async def has_session(self, session_id: str) -> bool:
        """Whether the session exists (storages may answer without building the session)."""
        return await self.get_session(session_id) is not None

    async def save_message(self, session_id: str, message: Message) -> Message:
        """Store a new message, giving it a change stamp unique within its session.

        ``message.updated_at`` is set to ``max(message.created_at, last stamp + 1 ms)`` and
        ``created_at`` to the same value, so the session's stamps increase in commit order.
        :class:`~pocketping.SessionNotFound` when the session does not exist (erased meanwhile).
        """
        raise StorageCapabilityError(self, "save_message", "storing a message")

    async def get_messages(
        self, session_id: str, *, after: datetime | None = None, limit: int | None = None
    ) -> list[Message]:
        """Messages of a session; oldest first, or, with ``after``, those created or changed
        after that stamp, in stamp order."""
        raise StorageCapabilityError(self, "get_messages", "reading messages")

    async def get_message(self, session_id: str, message_id: str) -> Message | None:
        for message in await self.get_messages(session_id):
            if message.id == message_id:
                return message
        return None

    async def update_message(self, session_id: str, message_id: str, changes: Mapping[str, Any]) -> Message | None:
        """Apply ``changes`` (field → value; :data:`STAMP` means "the new stamp") and move the
        message's ``updated_at`` to a new stamp. ``None`` if there is no such message."""
        raise StorageCapabilityError(self, "update_message", "editing messages")

    # -- bridges: durable outbox and key-value map (optional; see pocketping.bridges.queue) ----

    async def outbox_add(
        self, bridge: str, session_id: str, kind: str, key: str, payload: dict[str, Any], *, due_ms: int = 0
    ) -> int:
        """Queue a job for a destination; returns its id. Jobs of one (destination, session) line
        run in id order; ``due_ms`` (Unix ms): not before then (a job due later holds its line)."""
        raise StorageCapabilityError(self, "outbox_add", "durable bridge delivery")

    async def outbox_claim(self, *, now_ms: int, lease_ms: int, limit: int) -> list[dict[str, Any]]:
        """Claim the due head of each (bridge, session) line: rows ``{id, bridge, session_id, kind,
        key, payload, attempts, reclaimed}``; ``reclaimed`` when a claim whose lease ran out is taken
        over (the earlier attempt's outcome is unknown)."""
        raise StorageCapabilityError(self, "outbox_claim", "durable bridge delivery")

    async def outbox_done(self, item_id: int) -> None:
        raise StorageCapabilityError(self, "outbox_done", "durable bridge delivery")

    async def outbox_retry(self, item_id: int, *, due_ms: int, error: str, dead: bool = False) -> None:
        """Count a failed attempt and schedule the next at ``due_ms`` (``dead``: give up, keep the row)."""
        raise StorageCapabilityError(self, "outbox_retry", "durable bridge delivery")

    async def outbox_next_due(self) -> int | None:
        """The earliest ``due_ms`` among pending line heads (``None``: nothing waits)."""
        raise StorageCapabilityError(self, "outbox_next_due", "durable bridge delivery")

    async def bridge_key_get(self, key: str) -> str | None:
        raise StorageCapabilityError(self, "bridge_key_get", "bridge thread mapping")

    async def bridge_key_set(
        self, key: str, value: str, *, only_new: bool = False, session_id: str | None = None
    ) -> bool:
        """Store ``key`` → ``value``; with ``only_new``, only if absent (returns whether it was
        stored). ``session_id``: the session the entry is about (deleted with it); when that
        session does not exist (erased), nothing is stored and the answer is False."""
        raise StorageCapabilityError(self, "bridge_key_set", "bridge thread mapping")

    async def bridge_key_delete(self, key: str) -> None:
        raise StorageCapabilityError(self, "bridge_key_delete", "bridge thread mapping")

    # -- erasure and retention (optional; PocketPing.export / forget / purge) ---------------

    async def find_sessions_by_visitor(self, visitor_id: str) -> list[Session]:
        """Every session of the visitor, oldest first."""
        raise StorageCapabilityError(self, "find_sessions_by_visitor", "export() and forget()")

    async def list_inactive_sessions(self, before: datetime, *, limit: int) -> list[str]:
        """Ids of up to ``limit`` sessions whose last activity is before ``before``, idlest first."""
        raise StorageCapabilityError(self, "list_inactive_sessions", "purge() and retention_days")

    async def delete_sessions(self, session_ids: Sequence[str]) -> int:
        """Delete the sessions with their messages, bridge outbox rows and bridge keys, in one
        transaction where the storage has them; returns how many messages were deleted."""
        raise StorageCapabilityError(self, "delete_sessions", "forget() and purge()")

    # -- statistics (optional; PocketPing.get_stats) -------------------------------------------

    async def conversation_stats(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        """Aggregates of the window ``[since_ms, until_ms)``, see
        :func:`pocketping.stats.from_figures`."""
        raise StorageCapabilityError(self, "conversation_stats", "get_stats()")

    # -- bans by address and by user (optional; PocketPing.ban_address / ban_user) ------------

    async def list_bans(self) -> list[dict[str, Any]]:
        """Every stored ban: ``{"kind", "value", "created_ms", "reason"}``."""
        raise StorageCapabilityError(self, "list_bans", "bans by address or user")

    async def save_ban(self, kind: str, value: str, *, reason: str | None = None) -> None:
        """Store a ban (``kind`` ``"address"`` or ``"user"``); storing it again keeps one."""
        raise StorageCapabilityError(self, "save_ban", "bans by address or user")

    async def delete_ban(self, kind: str, value: str) -> None:
        raise StorageCapabilityError(self, "delete_ban", "bans by address or user")

    # -- operator accounts (optional; PocketPing.add_operator) ----------------------------------

    async def list_operators(self) -> list[dict[str, Any]]:
        """Every operator account: ``{"name", "role", "password_hash", "generation", "created_ms"}``."""
        raise StorageCapabilityError(self, "list_operators", "operator accounts")

    async def save_operator(self, record: dict[str, Any]) -> None:
        """Store an account, replacing the one of the same name (names compare case-insensitively)."""
        raise StorageCapabilityError(self, "save_operator", "operator accounts")

    async def delete_operator(self, name: str) -> bool:
        """Remove an account; False if there was none of that name."""
        raise StorageCapabilityError(self, "delete_operator", "operator accounts")


def missing_methods(storage: BaseStorage, names: Sequence[str]) -> list[str]:
    """Which of the optional methods ``names`` ``storage`` does not implement."""
    if isinstance(storage, StorageAdapter):
        return [n for n in names if not storage.has(n)]
    return [n for n in names if getattr(type(storage), n) is getattr(BaseStorage, n)]


def next_stamp(last_ms: int | None, wanted_ms: int | None = None) -> int:
    """A stamp after ``last_ms``: now (or ``wanted_ms``), pushed 1 ms past the last if needed."""
    stamp = now_ms() if wanted_ms is None else wanted_ms
    if last_ms is not None and stamp <= last_ms:
        stamp = last_ms + 1
    return stamp


def apply_changes(message: Message, changes: Mapping[str, Any], stamp: datetime) -> None:
    for key, value in changes.items():
        setattr(message, key, stamp if value is STAMP else value)
    message.updated_at = stamp


def _accepts(fn: Callable[..., Any], *names: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return all(n in params for n in names)


class StorageAdapter(BaseStorage):
    """Wraps a user's duck-typed storage (sync or async methods, dict rows) as a BaseStorage.

    Stamps are kept unique per session by an in-process clock seeded from the storage, so
    a seed-style storage is correct for one process; several processes need a storage that
    assigns stamps itself (the built-in ones do).
    """

    def __init__(self, inner: Any) -> None:
        missing = [
            m
            for m in ("create_session", "get_session", "save_message", "get_messages")
            if not callable(getattr(inner, m, None))
        ]
        if missing:
            raise TypeError(
                f"{type(inner).__name__} cannot be used as a PocketPing storage: it has no "
                + ", ".join(f"{m}()" for m in missing)
                + " method"
                + ("s" if len(missing) > 1 else "")
            )
        self.inner = inner
        self._last: dict[str, int] = {}
        self._clock_lock = threading.Lock()
        self._paging = _accepts(inner.get_messages, "after", "limit")

    def __repr__(self) -> str:
        return f"StorageAdapter({self.inner!r})"

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.inner, name)
        if inspect.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        result = await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
        if inspect.isawaitable(result):
            return await result
        return result

    def has(self, name: str) -> bool:
        """Whether the wrapped storage has a method ``name``."""
        return callable(getattr(self.inner, name, None))

    async def open(self) -> None:
        if self.has("open"):
            await self._call("open")

    async def close(self) -> None:
        if self.has("close"):
            await self._call("close")

    async def create_session(self, session: Session) -> None:
        await self._call("create_session", session)

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._call("get_session", session_id)
        return None if row is None else Session.from_mapping(_as_mapping(row))

    async def update_session(self, session: Session) -> None:
        if not self.has("update_session"):
            raise StorageCapabilityError(self.inner, "update_session", "changing a session")
        await self._call("update_session", session)

    async def list_sessions(self, *, limit: int | None = None, include_closed: bool = False) -> list[Session]:
        for name in ("list_sessions", "get_sessions"):
            if self.has(name):
                fn = getattr(self.inner, name)
                kwargs: dict[str, Any] = {}
                if _accepts(fn, "limit"):
                    kwargs["limit"] = limit
                if _accepts(fn, "include_closed"):
                    kwargs["include_closed"] = include_closed
                rows = await self._call(name, **kwargs)
                sessions = [Session.from_mapping(_as_mapping(r)) for r in rows]
                if not include_closed:
                    sessions = [s for s in sessions if s.is_active]
                sessions.sort(key=lambda s: s.last_activity or s.created_at, reverse=True)
                return sessions[:limit] if limit is not None else sessions
        raise StorageCapabilityError(self.inner, "list_sessions", "get_sessions()")

    async def find_session_by_visitor(self, visitor_id: str) -> Session | None:
        for name in ("find_session_by_visitor", "get_session_by_visitor"):
            if self.has(name):
                row = await self._call(name, visitor_id)
                return None if row is None else Session.from_mapping(_as_mapping(row))
        return None

    async def _last_stamp(self, session_id: str) -> int | None:
        if session_id not in self._last:
            messages = await self.get_messages(session_id)
            last = max((to_ms(m.cursor) for m in messages), default=None)
            with self._clock_lock:
                if session_id not in self._last and last is not None:
                    self._last[session_id] = last
        return self._last.get(session_id)

    async def _stamp(self, session_id: str, wanted_ms: int | None = None) -> datetime:
        last = await self._last_stamp(session_id)
        with self._clock_lock:
            stamp = next_stamp(max(last or 0, self._last.get(session_id, 0)) or None, wanted_ms)
            self._last[session_id] = stamp
        return from_ms(stamp)

    async def save_message(self, session_id: str, message: Message) -> Message:
        # Read first: a message of a session erased meanwhile is refused, not kept orphaned
        # (the chat service holds the session's lock, so the erasure cannot slip in between).
        session = await self.get_session(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        stamp = await self._stamp(session_id, to_ms(message.created_at))
        message.created_at = message.updated_at = stamp
        result = await self._call("save_message", session_id, message)
        if self.has("update_session"):  # keep get_sessions() ordered by activity
            session.last_activity = stamp
            await self._call("update_session", session)
        if isinstance(result, Mapping) and "id" in result:
            return Message.from_mapping(result, session_id)
        return message

    async def get_messages(
        self, session_id: str, *, after: datetime | None = None, limit: int | None = None
    ) -> list[Message]:
        if self._paging:
            rows = await self._call("get_messages", session_id, after=after, limit=limit)
            return [Message.from_mapping(_as_mapping(r), session_id) for r in rows]
        rows = await self._call("get_messages", session_id)
        messages = [Message.from_mapping(_as_mapping(r), session_id) for r in rows]
        if after is not None:
            messages = [m for m in messages if m.cursor > after]
            messages.sort(key=lambda m: m.cursor)
        else:
            messages.sort(key=lambda m: m.created_at)
        return messages[:limit] if limit is not None else messages

    async def get_message(self, session_id: str, message_id: str) -> Message | None:
        if self.has("get_message"):
            row = await self._call("get_message", session_id, message_id)
            return None if row is None else Message.from_mapping(_as_mapping(row), session_id)
        return await super().get_message(session_id, message_id)

    async def update_message(self, session_id: str, message_id: str, changes: Mapping[str, Any]) -> Message | None:
        if not self.has("update_message"):
            raise StorageCapabilityError(self.inner, "update_message", "editing messages")
        message = await self.get_message(session_id, message_id)
        if message is None:
            return None
        apply_changes(message, changes, await self._stamp(session_id))
        await self._call("update_message", session_id, message)
        return message

    async def find_sessions_by_visitor(self, visitor_id: str) -> list[Session]:
        if not self.has("find_sessions_by_visitor"):
            raise StorageCapabilityError(self.inner, "find_sessions_by_visitor", "export() and forget()")
        rows = await self._call("find_sessions_by_visitor", visitor_id)
        return sorted((Session.from_mapping(_as_mapping(r)) for r in rows), key=lambda s: s.created_at)

    async def list_inactive_sessions(self, before: datetime, *, limit: int) -> list[str]:
        if not self.has("list_inactive_sessions"):
            raise StorageCapabilityError(self.inner, "list_inactive_sessions", "purge() and retention_days")
        return [str(sid) for sid in await self._call("list_inactive_sessions", before, limit=limit)][:limit]

    async def delete_sessions(self, session_ids: Sequence[str]) -> int:
        if not self.has("delete_sessions"):
            raise StorageCapabilityError(self.inner, "delete_sessions", "forget() and purge()")
        deleted = await self._call("delete_sessions", list(session_ids))
        for sid in session_ids:
            with self._clock_lock:
                self._last.pop(sid, None)
        return int(deleted or 0)

    async def conversation_stats(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        if not self.has("conversation_stats"):
            raise StorageCapabilityError(self.inner, "conversation_stats", "get_stats()")
        return dict(await self._call("conversation_stats", since_ms, until_ms))

    async def list_bans(self) -> list[dict[str, Any]]:
        if not self.has("list_bans"):
            raise StorageCapabilityError(self.inner, "list_bans", "bans by address or user")
        return [dict(_as_mapping(r)) for r in await self._call("list_bans")]

    async def save_ban(self, kind: str, value: str, *, reason: str | None = None) -> None:
        if not self.has("save_ban"):
            raise StorageCapabilityError(self.inner, "save_ban", "bans by address or user")
        await self._call("save_ban", kind, value, reason=reason)

    async def delete_ban(self, kind: str, value: str) -> None:
        if not self.has("delete_ban"):
            raise StorageCapabilityError(self.inner, "delete_ban", "bans by address or user")
        await self._call("delete_ban", kind, value)

    async def list_operators(self) -> list[dict[str, Any]]:
        if not self.has("list_operators"):
            raise StorageCapabilityError(self.inner, "list_operators", "operator accounts")
        return [dict(_as_mapping(r)) for r in await self._call("list_operators")]

    async def save_operator(self, record: dict[str, Any]) -> None:
        if not self.has("save_operator"):
            raise StorageCapabilityError(self.inner, "save_operator", "operator accounts")
        await self._call("save_operator", dict(record))

    async def delete_operator(self, name: str) -> bool:
        if not self.has("delete_operator"):
            raise StorageCapabilityError(self.inner, "delete_operator", "operator accounts")
        return bool(await self._call("delete_operator", name))


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    if hasattr(row, "_asdict"):
        return dict(row._asdict())
    if hasattr(row, "keys"):
        return {k: row[k] for k in row.keys()}  # noqa: SIM118  (sqlite3.Row)
    if hasattr(row, "__dict__"):
        return dict(vars(row))
    raise TypeError(f"storage returned {type(row).__name__}, expected a mapping or an object")


def ensure_storage(storage: Any) -> BaseStorage:
    """The storage to use: built-ins as they are, anything else through the adapter."""
    if isinstance(storage, BaseStorage):
        return storage
    return StorageAdapter(storage)
