"""The in-process hub: hands each event to the open streams (WebSocket / SSE) it concerns.

Frames are serialised once per event and shared by every subscriber. A subscriber belongs
to the event loop that created it; publishing from another thread or loop is safe (the item
is handed over with ``call_soon_threadsafe``). A subscriber that falls more than ``maxsize``
frames behind is marked ``overflowed``: its stream closes and the client catches up from
storage on reconnect, so one slow client never holds memory or slows the others.

A :class:`Broker` carries events between processes; see ``pocketping.realtime.brokers``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ..models import Message, compact_json, iso
from .mailbox import Mailbox

log = logging.getLogger("pocketping.realtime")

#: The channel that receives every session's events (operator console).
ALL = "*"

#: (JSON text of the ``{"type","data"}`` envelope, SSE event id or None)
Frame = tuple[str, str | None]


def message_frame(message: Message) -> Frame:
    """The ``message`` push of a message's current state; its event id is the change stamp."""
    wire = message.to_wire()
    # A new message's change stamp is its creation stamp: reuse the text.
    cursor = wire["timestamp"] if message.updated_at in (None, message.created_at) else iso(message.cursor)
    return compact_json({"type": "message", "data": wire}), cursor


#: How many recent event ids a session stream remembers to drop repeats (see ``Hub.replay``).
SEEN = 512


class Subscriber:
    __slots__ = ("channel", "queue", "loop", "overflowed", "seen", "wake")

    def __init__(self, channel: str, maxsize: int, *, track_seen: bool = False) -> None:
        self.channel = channel
        self.queue: Mailbox[Frame | None] = Mailbox(maxsize)
        self.loop = asyncio.get_running_loop()
        self.overflowed = False
        # Only a process with a broker can be handed a frame twice (a resync after a gap).
        self.seen: dict[str, None] | None = {} if track_seen else None
        #: Called after each frame is queued (a WebSocket starts its sender on demand).
        self.wake: Callable[[], None] | None = None

    def note(self, event_id: str | None) -> bool:
        """Remember that the stream carries ``event_id`` (a change stamp, unique within a
        session); False if it already did. The all-sessions channel mixes sessions: no check."""
        if event_id is None or self.seen is None or self.channel == ALL:
            return True
        if event_id in self.seen:
            return False
        self.seen[event_id] = None
        if len(self.seen) > SEEN:
            del self.seen[next(iter(self.seen))]
        return True

    def _put(self, item: Frame | None) -> None:
        if item is not None and not self.note(item[1]):
            return  # already delivered (a broker resync after a reconnect, say)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
        if self.wake is not None:
            self.wake()

    def close(self) -> None:
        """Ask the stream to end (it reads ``None``)."""
        self.overflowed = True
        self.queue.clear()
        self.queue.put_nowait(None)
        if self.wake is not None:
            self.wake()


class Hub:
    def __init__(self, *, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        #: Set when a broker may hand the same frame over twice: streams then drop repeats.
        self.track_seen = False
        self._channels: dict[str, set[Subscriber]] = {}

    def subscribe(self, channel: str) -> Subscriber:
        sub = Subscriber(channel, self.maxsize, track_seen=self.track_seen)
        self._channels.setdefault(channel, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._channels.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._channels[sub.channel]

    def count(self, channel: str | None = None) -> int:
        if channel is not None:
            return len(self._channels.get(channel, ()))
        return sum(len(s) for s in self._channels.values())

    def listening(self, channel: str | None) -> bool:
        """Whether a frame for ``channel`` would reach any stream of this process."""
        channels = self._channels
        if channel is None:
            return bool(channels)
        return channel in channels or ALL in channels

    def deliver(self, channel: str | None, frame: Frame) -> None:
        """Give ``frame`` to the subscribers of ``channel`` (``None``: every channel) and to
        the all-sessions channel."""
        if channel is None:
            targets: list[Subscriber] = [s for subs in self._channels.values() for s in subs]
        else:
            targets = list(self._channels.get(channel, ()))
            if channel != ALL:
                targets.extend(self._channels.get(ALL, ()))
        if not targets:
            return
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for sub in targets:
            if sub.loop is here:
                sub._put(frame)
            elif not sub.loop.is_closed():
                sub.loop.call_soon_threadsafe(sub._put, frame)

    def session_channels(self) -> list[str]:
        """The sessions that have an open stream in this process."""
        return [c for c in self._channels if c != ALL]

    def replay(self, channel: str, frames: list[Frame]) -> None:
        """Give ``frames`` to the streams of one session only, each skipping what it already
        carried (used to catch streams up from storage after a broker gap)."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for sub in list(self._channels.get(channel, ())):
            for frame in frames:
                if sub.loop is here:
                    sub._put(frame)
                elif not sub.loop.is_closed():
                    sub.loop.call_soon_threadsafe(sub._put, frame)

    def close_channel(self, channel: str) -> None:
        """End every stream of one session (they catch up from storage when they reconnect)."""
        for sub in list(self._channels.get(channel, ())):
            if not sub.loop.is_closed():
                sub.loop.call_soon_threadsafe(sub.close)

    def close_all(self) -> None:
        for subs in list(self._channels.values()):
            for sub in list(subs):
                if sub.loop.is_closed():
                    continue
                sub.loop.call_soon_threadsafe(sub.close)


class Broker:
    """Carries frames between processes. Subclasses publish to their transport and call
    ``self.on_frame(channel, frame)`` for frames that arrive from other processes.

    ``on_frame`` is installed by PocketPing; a broker must not hand a process its own
    frames back (the publishing process has already delivered them locally).
    """

    on_frame: Callable[[str | None, Frame], None]

    async def start(self) -> None:
        """Connect; keep reconnecting in the background until :meth:`stop`."""

    async def stop(self) -> None:
        """Disconnect."""

    async def publish(self, channel: str | None, frame: Frame) -> None:
        """Send ``frame`` to the other processes. Never raises: an outage is logged and the
        frame dropped (streams catch up from storage)."""

    #: Installed by PocketPing: ``await on_gap(since)`` after frames from other processes may
    #: have been missed since ``since`` (a reconnect); open streams catch up from storage.
    on_gap: Callable[[datetime], Awaitable[Any]] | None = None
