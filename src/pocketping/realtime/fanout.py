"""Fan-out: a push reaches the session's open streams on this process (the :class:`Hub`) and,
through the :class:`Broker` when there is one, on every other process."""

from __future__ import annotations

import asyncio
from typing import Any

from ..models import Message, compact_json
from .hub import Broker, Hub, message_frame


class Fanout:
    def __init__(self, hub: Hub, broker: Broker | None = None) -> None:
        self.hub = hub
        self.broker = broker
        self._tasks: set[asyncio.Task[Any]] = set()

    def publish(self, session_id: str | None, type: str, data: dict[str, Any], event_id: str | None = None) -> None:
        """Push ``{"type", "data"}`` to the session's streams (``None``: every stream);
        ``event_id`` is the SSE id (a change stamp)."""
        if self.broker is None and not self.hub.listening(session_id):
            return  # nobody to tell: skip serialising
        self._send(session_id, (compact_json({"type": type, "data": data}), event_id))

    def publish_message(self, message: Message) -> None:
        """Push a message's current state to its session's streams."""
        if self.broker is None and not self.hub.listening(message.session_id):
            return
        self._send(message.session_id, message_frame(message))

    def _send(self, channel: str | None, frame: tuple[str, str | None]) -> None:
        self.hub.deliver(channel, frame)
        if self.broker is not None:
            task = asyncio.get_running_loop().create_task(self.broker.publish(channel, frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout``) for broker publishes still in flight; used at shutdown."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
