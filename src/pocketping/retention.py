"""What PocketPing keeps about a visitor, and for how long: export, erasure and purge.

``export`` gathers everything stored about a visitor; ``forget`` erases it everywhere PocketPing
keeps it (sessions, messages, uploaded files, bridge outbox rows and thread mappings); ``purge``
does the same for sessions idle since before a date, and :class:`RetentionSchedule` runs it
every hour for ``PocketPing(retention_days=N)``.

An erasure wins every race with the visitor (see :func:`erase`): files go first, then the rows
in one storage call (so an interrupted erasure can simply be run again), then the bridges drop
their work about the sessions, then files once more, for uploads that raced the first pass.
Every upload step checks, after it has written, that its session still exists (and removes
what it wrote when not); message saves and bridge keys need the session row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput, StorageCapabilityError
from .models import Session, iso, parse_time
from .storage.base import missing_methods

if TYPE_CHECKING:
    from .chat import ChatService

log = logging.getLogger("pocketping")

#: Sessions erased per storage call by ``purge``.
PURGE_BATCH = 500

EXPORT_NEEDS = ("find_sessions_by_visitor",)
FORGET_NEEDS = ("find_sessions_by_visitor", "delete_sessions")
PURGE_NEEDS = ("list_inactive_sessions", "delete_sessions")


@dataclass
class Removed:
    """What an erasure removed: the session ids, and how many messages and files."""

    sessions: list[str] = field(default_factory=list)
    messages: int = 0
    files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"sessions": list(self.sessions), "messages": self.messages, "files": self.files}


def require(chat: ChatService, needs: Sequence[str], what: str, *, erases_files: bool = True) -> None:
    """:class:`StorageCapabilityError` naming the methods the storage lacks for ``what``, or
    the file store's ``delete_sessions`` when ``what`` erases files."""
    missing = missing_methods(chat.storage, needs)
    if missing:
        raise StorageCapabilityError(chat.storage, missing, what)
    if erases_files and not callable(getattr(chat.files, "delete_sessions", None)):
        raise StorageCapabilityError(chat.files, "delete_sessions", what)


def _plain(value: Any) -> Any:
    """``value`` with datetimes as ISO-8601 text: JSON-serialisable."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _visitor(visitor_id: Any) -> str:
    if not isinstance(visitor_id, str) or not visitor_id:
        raise InvalidInput("visitor_id must be a non-empty string")
    return visitor_id


async def export(chat: ChatService, visitor_id: str) -> dict[str, Any]:
    """Everything stored about the visitor: sessions (metadata, identity, pre-chat answers,
    rating…), their messages (deleted ones with their stored text) and attachment metadata."""
    require(chat, EXPORT_NEEDS, "export()", erases_files=False)
    visitor_id = _visitor(visitor_id)
    sessions = []
    for session in await chat.storage.find_sessions_by_visitor(visitor_id):
        messages = await chat.storage.get_messages(session.id)
        sessions.append({**_plain(session.to_dict()), "messages": [_plain(m.to_dict()) for m in messages]})
    return {"visitorId": visitor_id, "exportedAt": iso(datetime.now(UTC)), "sessions": sessions}


async def erase(chat: ChatService, sessions: Sequence[Session], *, visitors_locked: bool = False) -> Removed:
    """Erase these sessions everywhere, holding their locks (no change to them on this process
    runs meanwhile; ``visitors_locked``: the caller holds their visitors' locks already):
    files, rows, the bridges' work about them (in-flight deliveries are cancelled), files
    again; their open streams end and their waiting hook calls are dropped."""
    if not sessions:
        return Removed()
    ids = [s.id for s in sessions]
    async with chat.locked(sessions, visitors=not visitors_locked):
        files = int(await chat.files.delete_sessions(ids))
        messages = await chat.storage.delete_sessions(ids)
        for listener in chat.listeners:
            try:
                await listener.sessions_erased(ids)
            except Exception:
                log.exception("a listener failed to drop the work of erased sessions")
        chat.forget_sessions(ids)
        files += int(await chat.files.delete_sessions(ids))
    return Removed(ids, messages, files)


async def forget(chat: ChatService, visitor_id: str) -> Removed:
    require(chat, FORGET_NEEDS, "forget()")
    visitor_id = _visitor(visitor_id)
    # Under the visitor's lock: a first connect of this visitor running now finishes before
    # the sessions are listed (and is erased), or starts after the erasure.
    async with chat.lock(f"visitor:{visitor_id}"):
        sessions = await chat.storage.find_sessions_by_visitor(visitor_id)
        removed = await erase(chat, sessions, visitors_locked=True)
    log.info(
        "forgot a visitor: %d sessions, %d messages, %d files", len(removed.sessions), removed.messages, removed.files
    )
    return removed


async def purge(chat: ChatService, before: datetime | str) -> Removed:
    """Erase every session whose last activity is before ``before``."""
    require(chat, PURGE_NEEDS, "purge()")
    try:
        cutoff = parse_time(before)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"before: {exc}") from None
    total = Removed()
    while True:
        ids = await chat.storage.list_inactive_sessions(cutoff, limit=PURGE_BATCH)
        if not ids or set(ids) <= set(total.sessions[-PURGE_BATCH:]):
            break  # nothing left (or a storage that did not delete: do not spin)
        found = [await chat.storage.get_session(sid) for sid in ids]
        batch = await erase(chat, [s for s in found if s is not None])
        if not batch.sessions:
            break  # listed, yet not found by id: do not spin
        total.sessions += batch.sessions
        total.messages += batch.messages
        total.files += batch.files
        if len(ids) < PURGE_BATCH:
            break
    if total.sessions:
        log.info("purged %d sessions idle since before %s", len(total.sessions), iso(cutoff))
    return total


class RetentionSchedule:
    """Purges sessions idle for ``days`` now and then every ``interval`` seconds."""

    def __init__(self, days: float, run: Callable[[datetime], Awaitable[Removed]], *, interval: float = 3600.0) -> None:
        if isinstance(days, bool) or not isinstance(days, int | float) or days <= 0:
            raise InvalidInput(f"retention_days must be a positive number of days, not {days!r}")
        if interval <= 0:
            raise InvalidInput("retention_interval must be a positive number of seconds")
        self.days = days
        self.interval = interval
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="pocketping-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run_once(self) -> Removed:
        return await self._run(datetime.now(UTC) - timedelta(days=self.days))

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("retention purge failed; trying again in %.0f s", self.interval)
            await asyncio.sleep(self.interval)
