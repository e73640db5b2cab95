"""``/stream``: real-time pushes over WebSocket (upgrade) and SSE (plain GET).

Both subscribe to the hub *before* reading what the client missed from storage, so nothing
falls between catch-up and live delivery (a message may arrive twice; clients dedupe by id).

* Both, on open, replay the session's messages changed after the client's cursor or, without
  one, in the last two minutes (a reply sent between ``/connect`` and the stream's opening
  would otherwise be missed; the widget matches messages by id), then push live frames.
* WebSocket: accepts the widget's ``event`` frames.
* SSE: unnamed events whose ``data:`` holds the ``{"type","data"}`` envelope; ``id:`` is the
  change stamp, so ``Last-Event-ID`` (or ``?after=``) resumes exactly; comment heartbeats;
  headers that stop proxies from buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import Forbidden, InvalidInput
from ..models import Message, parse_time
from ..protocol import WidgetEventData, WidgetFrame
from ..realtime.hub import message_frame
from .parsing import parse_cursor

if TYPE_CHECKING:
    from ..core import PocketPing
    from ..realtime.hub import Subscriber

log = logging.getLogger("pocketping.realtime")

REPLAY_WINDOW = timedelta(minutes=2)
REPLAY_LIMIT = 50
SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


#: Frames a widget may send per second on one WebSocket (it sends a custom event now and
#: then); past it, frames are dropped, and a client that keeps it up is disconnected.
FRAMES_PER_SECOND = 20
#: Frames dropped within one second after which the stream is closed (1008).
FRAMES_DROPPED_LIMIT = 200


def stream_http(pp: PocketPing) -> Callable[[Request], Awaitable[Response]]:
    async def sse(request: Request) -> Response:
        if request.headers.get("upgrade", "").lower() == "websocket":
            # A WebSocket handshake that reached the HTTP route: the server cannot upgrade (WSGI).
            return JSONResponse(
                {"error": "websocket_unavailable", "detail": "this server speaks SSE and polling on /stream"},
                status_code=426,
            )
        sid = request.query_params.get("sessionId", "").strip()
        if not sid:
            raise InvalidInput("query parameter sessionId is required")
        after = parse_cursor(request.query_params.get("after") or request.headers.get("last-event-id"))
        await pp.chat.visitor_session(sid)
        if pp.max_sse_streams is not None and open_sse[0] >= pp.max_sse_streams:
            # The widget takes any SSE error as "use polling", which holds no thread.
            return JSONResponse(
                {"error": "sse_unavailable", "detail": "no stream available here; poll /messages"},
                status_code=503,
                headers={"Retry-After": "30"},
            )
        sub = pp.hub.subscribe(sid)
        try:
            missed = await missed_since(pp, sid, after)
        except BaseException:
            pp.hub.unsubscribe(sub)
            raise
        return StreamingResponse(
            _sse_body(pp, sub, missed, open_sse), media_type="text/event-stream", headers=SSE_HEADERS
        )

    open_sse = [0]  # SSE streams being served by this app
    return sse


async def _sse_body(pp: PocketPing, sub: Subscriber, missed: list[Message], open_sse: list[int]) -> AsyncIterator[str]:
    open_sse[0] += 1
    # Under WSGI (a2wsgi) a client that leaves is never reported to the app: its last write
    # just never completes. A stream whose writes stop completing is ended by a watchdog.
    watchdog = _Watchdog(pp.sse_heartbeat * 3 + 2) if pp.served_by_wsgi else None
    try:
        yield "retry: 3000\n: connected\n\n"
        last = None
        for m in missed:
            text, last = message_frame(m)
            sub.note(last)  # a later broker resync skips it
            yield f"id: {last}\ndata: {text}\n\n"
        if last is not None:
            _drop_replayed(sub, last)
        queue = sub.queue
        while True:
            if watchdog is not None:
                watchdog.progress()
            try:
                item = await asyncio.wait_for(queue.get(), pp.sse_heartbeat)
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if item is None or sub.overflowed:
                return
            yield f"id: {item[1]}\ndata: {item[0]}\n\n" if item[1] else f"data: {item[0]}\n\n"
    finally:
        if watchdog is not None:
            watchdog.stop()
        open_sse[0] -= 1
        pp.hub.unsubscribe(sub)


async def missed_since(pp: PocketPing, session_id: str, after: datetime | None) -> list[Message]:
    """What a stream opening now replays: the changes after the client's cursor, or without
    one the last two minutes' (at most ``REPLAY_LIMIT``)."""
    if after is not None:
        return await pp.chat.catch_up(session_id, after)
    return await pp.chat.catch_up(session_id, datetime.now(UTC) - REPLAY_WINDOW, REPLAY_LIMIT)


def _drop_replayed(sub: Subscriber, last: str) -> None:
    """Drop the queued frames a catch-up already sent: the stream subscribed before reading
    storage, so a change made in between is in both. Event ids are ISO stamps of one format,
    so they compare as text."""
    kept = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        if item is None or item[1] is None or item[1] > last:
            kept.append(item)
    for item in kept:
        sub.queue.put_nowait(item)


class _Watchdog:
    """Cancels the task that runs it when :meth:`progress` has not been called for ``limit``
    seconds (checked every ``limit / 3`` seconds)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.owner = asyncio.current_task()
        self.last = time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(limit / 3, self._check)

    def progress(self) -> None:
        self.last = time.monotonic()

    def _check(self) -> None:
        if time.monotonic() - self.last > self.limit:
            log.debug("SSE stream stalled (client gone): ending it")
            if self.owner is not None:
                self.owner.cancel()
            return
        self.timer = asyncio.get_running_loop().call_later(self.limit / 3, self._check)

    def stop(self) -> None:
        self.timer.cancel()


def stream_ws(pp: PocketPing) -> Callable[[WebSocket], Awaitable[None]]:
    async def ws_endpoint(ws: WebSocket) -> None:
        sid = ws.query_params.get("sessionId", "").strip()
        try:
            after = parse_cursor(ws.query_params.get("after"))
        except InvalidInput:
            await ws.close(code=1008, reason="invalid after")
            return
        # Only whether it exists: the stream keeps no copy of the session while it stays open.
        session = await pp.chat.find_session(sid)
        refusal = "unknown session" if session is None else None
        if session is not None:
            try:
                pp.chat.refuse_banned(session)
            except Forbidden:
                refusal = "blocked"
        if refusal is not None:
            await ws.close(code=1008, reason=refusal)
            return
        await ws.accept()
        sub = pp.hub.subscribe(sid)
        sender = _WSSender(ws, sub, pp, asyncio.current_task())
        budget = _FrameBudget()
        try:
            await sender.replay(pp, after)
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if not budget.take():
                    if budget.dropped > FRAMES_DROPPED_LIMIT:
                        log.info("closed a stream of session %s: too many frames", sid, extra={"session_id": sid})
                        await ws.close(code=1008, reason="too many frames")
                        break
                    continue
                text = message.get("text")
                if text is None:  # binary frames carry nothing the widget sends
                    continue
                await _on_widget_frame(pp, sid, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        except asyncio.CancelledError:
            if not sender.gave_up:
                raise
        finally:
            pp.hub.unsubscribe(sub)
            sender.stop()

    return ws_endpoint


class _WSSender:
    """Sends a WebSocket's queued frames in order, with no task of its own.

    A send that the socket takes at once (the usual case: uvicorn only waits when the
    client's transport is paused) is driven right where the frame is delivered, so a
    broadcast to thousands of streams creates no task per stream. A send that has to wait
    continues in a task, which then drains what queued up meanwhile; one slow client never
    holds the others back.
    """

    __slots__ = ("ws", "sub", "pp", "owner", "task", "replaying", "gave_up", "closing")

    def __init__(self, ws: WebSocket, sub: Subscriber, pp: PocketPing, owner: asyncio.Task[Any] | None) -> None:
        self.ws, self.sub, self.pp, self.owner = ws, sub, pp, owner
        self.task: asyncio.Task[None] | None = None
        self.replaying = True
        #: Whether this side ended the stream (a client too slow to read): the endpoint stops
        #: waiting for frames and frees the stream at once.
        self.gave_up = False
        self.closing = False
        sub.wake = self.wake

    def wake(self) -> None:
        if self.closing or self.replaying:
            return
        queue, sub = self.sub.queue, self.sub
        if sub.overflowed:  # even while a send is stuck on a client that does not read
            self._end(1013)
            return
        if self.task is not None:
            return
        while not queue.empty():
            item = queue.get_nowait()
            if item is None or sub.overflowed:
                self._end(1013 if sub.overflowed else 1001)
                return
            send = self.ws.send_text(item[0])
            try:
                pending = send.send(None)
            except StopIteration:
                continue
            except Exception as exc:  # the socket went away
                log.debug("websocket send for %s failed: %s", sub.channel, exc)
                return
            self.task = asyncio.get_running_loop().create_task(self._finish(send, pending))
            return

    def _end(self, code: int) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        self.task = asyncio.get_running_loop().create_task(self._give_up(code))

    def stop(self) -> None:
        self.sub.wake = None
        if self.task is not None:
            self.task.cancel()

    async def replay(self, pp: PocketPing, after: datetime | None) -> None:
        """What the client may have missed: since ``after``, or the last two minutes."""
        try:
            missed = await missed_since(pp, self.sub.channel, after)
            last = None
            for m in missed:
                text, last = message_frame(m)
                self.sub.note(last)  # a later broker resync skips it
                await self.ws.send_text(text)
            if last is not None:
                _drop_replayed(self.sub, last)
        except Exception as exc:  # the socket went away: the receive loop will see it
            log.debug("websocket replay for %s ended: %s", self.sub.channel, exc)
        finally:
            self.replaying = False
        self.wake()

    async def _give_up(self, code: int) -> None:
        """Close the socket and end the endpoint now: a client that does not read would
        otherwise hold its stream until its TCP connection dies."""
        self.pp.hub.unsubscribe(self.sub)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code), 1.0)
        if code == 1013 and self.owner is not None and not self.owner.done():
            self.gave_up = True
            self.owner.cancel()

    async def _finish(self, send: Coroutine[Any, Any, None], pending: Any) -> None:
        queue, sub, ws = self.sub.queue, self.sub, self.ws
        try:
            await _Resume(send, pending)
            while not queue.empty():
                item = queue.get_nowait()
                if item is None or sub.overflowed:
                    self.closing = True
                    await self._give_up(1013 if sub.overflowed else 1001)
                    return
                await ws.send_text(item[0])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket went away while writing
            log.debug("websocket sender for %s ended: %s", sub.channel, exc)
        finally:
            if not self.closing:
                self.task = None


class _FrameBudget:
    """At most :data:`FRAMES_PER_SECOND` frames in each second; counts what it refuses in the
    current second."""

    __slots__ = ("second", "used", "dropped")

    def __init__(self) -> None:
        self.second = 0
        self.used = 0
        self.dropped = 0

    def take(self) -> bool:
        now = int(time.monotonic())
        if now != self.second:
            self.second, self.used, self.dropped = now, 0, 0
        if self.used < FRAMES_PER_SECOND:
            self.used += 1
            return True
        self.dropped += 1
        return False


class _Resume:
    """Awaits the rest of a coroutine that was started by hand and is suspended on
    ``pending`` (what it yielded to the event loop)."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, None, None]:
        pending = self.pending
        while True:
            try:
                yield pending
            except BaseException:
                self.coro.close()
                raise
            try:
                pending = self.coro.send(None)
            except StopIteration:
                return


async def _on_widget_frame(pp: PocketPing, session_id: str, text: str) -> None:
    try:
        frame = WidgetFrame.model_validate_json(text)
    except ValidationError:
        log.info("ignored a malformed frame from session %s", session_id, extra={"session_id": session_id})
        return
    if frame.type != "event":
        return
    try:
        data = WidgetEventData.model_validate(frame.data)
    except ValidationError:
        log.info("ignored a malformed event from session %s", session_id, extra={"session_id": session_id})
        return
    stamp = None
    if data.timestamp:
        with contextlib.suppress(ValueError):
            stamp = parse_time(data.timestamp)
    await pp.chat.widget_event(session_id, data.name, data.data or {}, stamp)
