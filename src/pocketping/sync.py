"""``pp.sync``: the public API as blocking calls, driving the one async core.

When PocketPing already runs on an event loop in another thread (a server), calls are
handed to that loop; otherwise a private loop on a daemon thread runs them. Calling from
inside a running event loop is refused: there, ``await`` the async API.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import PocketPingError

if TYPE_CHECKING:
    from .bans import Ban
    from .core import PocketPing
    from .models import Event, Message, Session
    from .retention import Removed
    from .stats import Stats

T = TypeVar("T")


class SyncPocketPing:
    """``pp.sync.send_message("sess_x", content="Hi")`` from Flask views, scripts, Celery.

    Each method is the async method of the same name on :class:`~pocketping.PocketPing`, run to
    completion; it starts PocketPing first if needed.
    """

    def __init__(self, pp: PocketPing) -> None:
        self._pp = pp
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _private_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pocketping-sync", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], *, start: bool = True) -> T:
        """Run one coroutine of the async API to completion and return its result."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise PocketPingError(
                "pp.sync was called from inside a running event loop, where it would block it; "
                "use the async API there (await pp.send_message(...))"
            )
        loop = self._pp.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            loop = self._private_loop()
        return asyncio.run_coroutine_threadsafe(self._started(coro) if start else coro, loop).result()

    async def _started(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._pp.started:
            await self._pp.start()
        return await coro

    def start(self) -> None:
        self.run(self._pp.start(), start=False)

    def stop(self) -> None:
        self.run(self._pp.stop(), start=False)

    def get_sessions(self, *, limit: int | None = 100, include_closed: bool = False) -> list[Session]:
        return self.run(self._pp.get_sessions(limit=limit, include_closed=include_closed))

    def get_session(self, session_id: str) -> Session:
        return self.run(self._pp.get_session(session_id))

    def get_messages(
        self, session_id: str, *, after: datetime | str | None = None, limit: int | None = None
    ) -> list[Message]:
        return self.run(self._pp.get_messages(session_id, after=after, limit=limit))

    def close_session(self, session_id: str) -> Session:
        return self.run(self._pp.close_session(session_id))

    def send_message(self, session_id: str, content: str | None = None, **options: Any) -> Message:
        """``options``: ``type``, ``reply_to``, ``metadata``, as :meth:`PocketPing.send_message`."""
        return self.run(self._pp.send_message(session_id, content, **options))

    def emit_event(self, session_id: str, name: str, /, **data: Any) -> Event:
        return self.run(self._pp.emit_event(session_id, name, **data))

    def send_typing(self, session_id: str, is_typing: bool = True, *, sender: str = "operator") -> None:
        self.run(self._pp.send_typing(session_id, is_typing, sender=sender))

    def set_operator_online(self, online: bool) -> None:
        self.run(self._pp.set_operator_online(online))

    def add_operator(self, name: str, *, password: str, role: str = "agent") -> Any:
        return self.run(self._pp.add_operator(name, password=password, role=role))

    def remove_operator(self, name: str) -> None:
        self.run(self._pp.remove_operator(name))

    def set_operator_password(self, name: str, password: str) -> None:
        self.run(self._pp.set_operator_password(name, password))

    def list_operators(self) -> list[Any]:
        return self.run(self._pp.list_operators())

    def set_ai(self, session_id: str, active: bool) -> None:
        self.run(self._pp.set_ai(session_id, active))

    def edit_message(self, session_id: str, message_id: str, content: str) -> Message:
        return self.run(self._pp.edit_message(session_id, message_id, content))

    def delete_message(self, session_id: str, message_id: str) -> Message:
        return self.run(self._pp.delete_message(session_id, message_id))

    def mark_read(self, session_id: str, message_ids: Sequence[str], status: str = "read") -> list[Message]:
        return self.run(self._pp.mark_read(session_id, message_ids, status))

    def get_stats(self, *, since: datetime | str | None = None, until: datetime | str | None = None) -> Stats:
        return self.run(self._pp.get_stats(since=since, until=until))

    def request_csat(self, session_id: str) -> datetime:
        return self.run(self._pp.request_csat(session_id))

    def is_open(self) -> bool:
        return self.run(self._pp.is_open())

    def ban(self, session_id: str, *, address: bool = False, user: bool = False, reason: str | None = None) -> Session:
        return self.run(self._pp.ban(session_id, address=address, user=user, reason=reason))

    def unban(self, session_id: str, *, address: bool = False, user: bool = False) -> Session:
        return self.run(self._pp.unban(session_id, address=address, user=user))

    def ban_address(self, address: str, *, reason: str | None = None) -> Ban:
        return self.run(self._pp.ban_address(address, reason=reason))

    def unban_address(self, address: str) -> bool:
        return self.run(self._pp.unban_address(address))

    def ban_user(self, user_id: str, *, reason: str | None = None) -> Ban:
        return self.run(self._pp.ban_user(user_id, reason=reason))

    def unban_user(self, user_id: str) -> bool:
        return self.run(self._pp.unban_user(user_id))

    def list_bans(self) -> list[Ban]:
        return self._pp.list_bans()

    def export(self, visitor_id: str) -> dict[str, Any]:
        return self.run(self._pp.export(visitor_id))

    def forget(self, visitor_id: str) -> Removed:
        return self.run(self._pp.forget(visitor_id))

    def purge(self, before: datetime | str) -> Removed:
        return self.run(self._pp.purge(before))
