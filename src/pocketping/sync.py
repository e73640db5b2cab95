"""``pp.sync``: the public API as blocking calls, driving the one async core.

When PocketPing already runs on an event loop in another thread (a server), calls are
handed to that loop; otherwise a private loop on a daemon thread runs them. Calling from
inside a running event loop is refused: there, ``await`` the async API.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import PocketPingError

if TYPE_CHECKING:
    from .core import PocketPing

T = TypeVar("T")

API = (
    "get_sessions",
    "get_session",
    "get_messages",
    "close_session",
    "send_message",
    "emit_event",
    "send_typing",
    "set_operator_online",
    "edit_message",
    "delete_message",
    "mark_read",
    "start",
    "stop",
)


class SyncPocketPing:
    """``pp.sync.send_message("sess_x", content="Hi")`` from Flask views, scripts, Celery."""

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

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
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
        return asyncio.run_coroutine_threadsafe(self._started(coro), loop).result()

    async def _started(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._pp._started and getattr(coro, "__name__", "") not in ("start", "stop"):
            await self._pp.start()
        return await coro

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in API:
            raise AttributeError(f"pp.sync has no {name!r}; it offers {', '.join(API)}")
        method = getattr(self._pp, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(method(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call

    def __dir__(self) -> list[str]:
        return [*API, "run"]
