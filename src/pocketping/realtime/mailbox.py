"""A stream's bounded FIFO: the part of ``asyncio.Queue`` the hub and the streams use
(``put_nowait``, ``get``, ``get_nowait``, ``empty``, ``qsize``) for one consumer, at a fraction
of its memory (one deque, and a future only while the stream waits). Every open stream holds
one, so this is most of the hub's cost per idle stream."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

#: Shared by every mailbox that never received anything (an idle stream): a deque costs
#: about 600 bytes even when empty. Never appended to.
_EMPTY: deque[object] = deque(maxlen=0)


class Mailbox(Generic[T]):
    __slots__ = ("_queue", "_maxsize", "_waiter")

    def __init__(self, maxsize: int = 0) -> None:
        self._queue: deque[T] = _EMPTY  # type: ignore[assignment]  # a real deque on first put
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    def put_nowait(self, item: T) -> None:
        """Append ``item``; :class:`asyncio.QueueFull` when ``maxsize`` items wait already."""
        if 0 < self._maxsize <= len(self._queue):
            raise asyncio.QueueFull
        if self._queue is _EMPTY:
            self._queue = deque()
        self._queue.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._queue = _EMPTY  # type: ignore[assignment]

    def get_nowait(self) -> T:
        if not self._queue:
            raise asyncio.QueueEmpty
        return self._queue.popleft()

    async def get(self) -> T:
        """The oldest item, waiting for one if needed (one consumer at a time)."""
        while not self._queue:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self._queue.popleft()
