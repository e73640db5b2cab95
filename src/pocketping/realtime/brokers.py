"""Brokers: carry real-time frames between PocketPing processes (several workers, several hosts).

``RedisBroker(url)`` uses redis pub/sub (extra ``pocketping[redis]``); ``PostgresBroker(dsn)``
uses PostgreSQL LISTEN/NOTIFY (extra ``pocketping[postgres]``, no further service).

How they behave, both alike:

* Every frame carries the id of the process that sent it; a process ignores its own frames (it
  delivered them locally when it published), so each open stream gets each frame once.
* ``publish`` never waits on the network and never raises: frames go to a bounded queue that one
  sender task drains in order, in batches. If the transport is down, the batch is logged and
  dropped, and once the transport is back the sender tells the other processes "you may have
  missed frames since T" (a gap notice).
* The listening side reconnects by itself with capped exponential backoff. After every
  (re)connect, and on a gap notice, PocketPing's ``on_gap(since)`` runs: each open stream of this
  process reads its session's messages changed since then from storage and receives those it
  has not carried yet (streams drop event ids they already carried), so nothing stored is lost
  and nothing is pushed twice. Ephemeral pushes (typing, custom events) of the gap are not
  replayed; messages, edits, deletes and read receipts are, as current message state.

Wire format of a broker payload: ``"<origin> <kind> <seq> <meta>\\n<body>"`` where kind ``f`` is a
frame (meta: JSON ``[channel, event_id]``, body: the frame's JSON text), ``g`` a gap notice (meta:
epoch milliseconds) and, for PostgreSQL only, ``F`` a frame too large for NOTIFY, stored in the
table ``pocketping_broker_frames`` (meta: its row id).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ..models import Message, from_ms
from .hub import Broker, Frame, Hub, message_frame

#: ``await read(session_id, since, limit)``: a session's messages changed after ``since``.
ReadSince = Callable[[str, datetime, int], Awaitable[list[Message]]]

log = logging.getLogger("pocketping.broker")

#: Frames from other processes may be missed from a little before the last sign of life.
GAP_MARGIN = 5.0
#: NOTIFY payloads must be shorter than 8,000 bytes; larger frames go through a table.
NOTIFY_LIMIT = 7900
_CHANNEL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def resync_streams(hub: Hub, read: ReadSince, since: datetime, *, limit: int = 500) -> int:
    """Push to every open session stream of this process the messages changed after ``since``
    (``await read(session_id, since, limit)``) that it has not carried yet. Returns how many
    sessions were read."""
    channels = hub.session_channels()
    gate = asyncio.Semaphore(8)

    async def one(session_id: str) -> None:
        async with gate:
            messages = await read(session_id, since, limit)
        if messages:
            hub.replay(session_id, [message_frame(m) for m in messages])

    results = await asyncio.gather(*(one(sid) for sid in channels), return_exceptions=True)
    for sid, result in zip(channels, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("resync of session %s failed: %s", sid, result, extra={"session_id": sid})
    return len(channels)


class QueueBroker(Broker):
    """The machinery both brokers share; subclasses implement the transport hooks."""

    def __init__(self, *, max_backoff: float = 5.0, queue_size: int = 10_000, send_timeout: float = 5.0) -> None:
        self.origin = uuid.uuid4().hex[:16]
        self.max_backoff = max_backoff
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.connected = False
        self.reconnects = 0
        self._seq = itertools.count()
        self._queue: asyncio.Queue[tuple[float, str]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: asyncio.Event | None = None
        self._alive_at = 0.0  # wall clock: the listening side was last known to receive
        self._missed_since: float | None = None  # our own frames were dropped since then

    # -- transport hooks --------------------------------------------------------------------

    async def _listen_connect(self) -> None:
        raise NotImplementedError

    async def _listen(self) -> None:
        """Receive until the connection fails; call ``_received`` and ``_alive``."""
        raise NotImplementedError

    async def _listen_close(self) -> None:
        raise NotImplementedError

    async def _send(self, payloads: list[str]) -> None:
        raise NotImplementedError

    async def _send_reset(self) -> None:
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, wait: float = 5.0) -> None:
        """Start the listener and the sender; wait up to ``wait`` s for the first connection
        (if it fails, PocketPing starts anyway and the broker keeps trying)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.queue_size)
        self._ready = asyncio.Event()
        self._alive_at = time.time()
        self._tasks = [loop.create_task(self._listen_forever()), loop.create_task(self._send_forever())]
        try:
            await asyncio.wait_for(self._ready.wait(), wait)
        except TimeoutError:
            log.warning("%s: not connected yet; retrying in the background", self)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._listen_close()
        with contextlib.suppress(Exception):
            await self._send_reset()
        self.connected = False

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, channel: str | None, frame: Frame) -> None:
        meta = json.dumps([channel, frame[1]], separators=(",", ":"))
        self._enqueue(f"{self.origin} f {next(self._seq)} {meta}\n{frame[0]}")

    def _enqueue(self, payload: str) -> None:
        if self._queue is None:
            return  # not started: this process has no peers to tell
        try:
            self._queue.put_nowait((time.time(), payload))
        except asyncio.QueueFull:
            self._missed(time.time(), 1, "queue full")

    def _missed(self, since: float, count: int, why: object) -> None:
        log.warning("%s: %d frame(s) not sent (%s); other processes will catch up from storage", self, count, why)
        self._missed_since = since if self._missed_since is None else min(self._missed_since, since)

    async def _send_forever(self) -> None:
        assert self._queue is not None
        queue = self._queue
        backoff = 0.05
        while True:
            batch: list[tuple[float, str]] = []
            if self._missed_since is None:
                batch.append(await queue.get())
            else:  # a gap notice is owed: send it even if nothing else is published
                with contextlib.suppress(TimeoutError):
                    batch.append(await asyncio.wait_for(queue.get(), 1.0))
            while batch and len(batch) < 500 and not queue.empty():
                batch.append(queue.get_nowait())
            payloads = [p for _, p in batch]
            owed = self._missed_since
            if owed is not None:
                payloads.insert(0, f"{self.origin} g {next(self._seq)} {int((owed - GAP_MARGIN) * 1000)}\n")
            try:
                await asyncio.wait_for(self._send(payloads), self.send_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if batch:
                    self._missed(batch[0][0], len(batch), exc)
                with contextlib.suppress(Exception):
                    await self._send_reset()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.05
            if owed is not None and self._missed_since == owed:
                self._missed_since = None

    # -- receiving --------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen_connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: cannot connect (%s); retrying in %.1f s", self, exc, backoff)
                with contextlib.suppress(Exception):
                    await self._listen_close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            since, self._alive_at = self._alive_at, time.time()
            self.connected = True
            assert self._ready is not None
            if self._ready.is_set():
                self.reconnects += 1
                log.info("%s: reconnected; open streams catch up from storage", self)
            self._ready.set()
            asyncio.get_running_loop().create_task(self._gap(since))
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: connection lost (%s); reconnecting", self, exc)
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await self._listen_close()

    def _alive(self) -> None:
        self._alive_at = time.time()

    async def _gap(self, since: float) -> None:
        if self.on_gap is None:
            return
        try:
            await self.on_gap(from_ms(int((since - GAP_MARGIN) * 1000)))
        except Exception:
            log.exception("%s: catching streams up after a gap failed", self)

    async def _received(self, payload: str) -> None:
        head, _, body = payload.partition("\n")
        parts = head.split(" ", 3)
        if len(parts) != 4:
            log.warning("%s: ignored a malformed payload", self)
            return
        origin, kind, _, meta = parts
        if origin == self.origin:
            return
        if kind == "F":
            fetched = await self._fetch_large(int(meta))
            if fetched is not None:
                await self._received(fetched)
            return
        if kind == "g":
            asyncio.get_running_loop().create_task(self._gap(int(meta) / 1000 + GAP_MARGIN))
            return
        if kind == "f":
            channel, event_id = json.loads(meta)
            self.on_frame(channel, (body, event_id))

    async def _fetch_large(self, row_id: int) -> str | None:
        return None


class RedisBroker(QueueBroker):
    """Frames over redis pub/sub: ``RedisBroker("redis://localhost:6379/0")``."""

    def __init__(self, url: str = "redis://localhost:6379/0", *, channel: str = "pocketping", **options: Any) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:
            raise ImportError("RedisBroker needs the redis package: pip install 'pocketping[redis]'") from exc
        super().__init__(**options)
        self.url = url
        self.channel = channel
        self._pubsub: Any = None
        self._listener: Any = None
        self._sender: Any = None

    def __repr__(self) -> str:
        return f"RedisBroker(channel={self.channel!r})"

    def _client(self, retries: int) -> Any:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff, NoBackoff

        retry = Retry(ExponentialBackoff(cap=0.5), retries) if retries else Retry(NoBackoff(), 0)
        return Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=3,
            socket_keepalive=True,
            health_check_interval=5,
            retry=retry,
            client_name="pocketping",
        )

    async def _listen_connect(self) -> None:
        # No retries inside redis-py: a silent reconnect would hide the gap from us.
        self._listener = self._client(0)
        self._pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)

    async def _listen(self) -> None:
        pubsub = self._pubsub
        while True:
            message = await pubsub.get_message(timeout=1.0)
            self._alive()
            if message is not None and message.get("type") == "message":
                await self._received(message["data"])

    async def _listen_close(self) -> None:
        pubsub, client, self._pubsub, self._listener = self._pubsub, self._listener, None, None
        if pubsub is not None:
            await pubsub.aclose()
        if client is not None:
            await client.aclose()

    async def _send(self, payloads: list[str]) -> None:
        if self._sender is None:
            self._sender = self._client(1)
        if len(payloads) == 1:
            await self._sender.publish(self.channel, payloads[0])
            return
        pipe = self._sender.pipeline(transaction=False)
        for payload in payloads:
            pipe.publish(self.channel, payload)
        await pipe.execute()

    async def _send_reset(self) -> None:
        client, self._sender = self._sender, None
        if client is not None:
            await client.aclose()


class PostgresBroker(QueueBroker):
    """Frames over PostgreSQL LISTEN/NOTIFY: ``PostgresBroker("postgresql://…/app")``.

    The listening connection's ``application_name`` is ``pocketping-listen``. Frames over
    NOTIFY's 8,000-byte limit are stored in ``pocketping_broker_frames`` and their row id is
    notified; rows older than ten minutes are deleted as new ones are written.
    """

    def __init__(self, dsn: str, *, channel: str = "pocketping", **options: Any) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ImportError("PostgresBroker needs psycopg 3: pip install 'pocketping[postgres]'") from exc
        if not _CHANNEL_NAME.match(channel):
            raise ValueError("channel must be a lower-case SQL identifier such as 'pocketping'")
        super().__init__(**options)
        self.dsn = dsn
        self.channel = channel
        self._listener: Any = None
        self._sender: Any = None
        self._fetcher: Any = None
        self._table_ready = False
        self._cleaned_at = 0.0

    def __repr__(self) -> str:
        return f"PostgresBroker(channel={self.channel!r})"

    async def _connect(self, role: str) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=f"pocketping-{role}", connect_timeout=5
        )

    async def _listen_connect(self) -> None:
        self._listener = await self._connect("listen")
        await self._listener.execute(f"LISTEN {self.channel}")

    async def _listen(self) -> None:
        conn = self._listener
        while True:
            async for note in conn.notifies(timeout=2.0):
                self._alive()
                await self._received(note.payload)
            # Quiet for 2 s: make sure the connection is still there.
            await asyncio.wait_for(conn.execute("SELECT 1"), 5)
            self._alive()

    async def _listen_close(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            await conn.close()

    async def _ensure_table(self, conn: Any) -> None:
        if self._table_ready:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x70706272,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS pocketping_broker_frames ("
                "id BIGSERIAL PRIMARY KEY, created TIMESTAMPTZ NOT NULL DEFAULT now(), payload TEXT NOT NULL)"
            )
        self._table_ready = True

    async def _send(self, payloads: list[str]) -> None:
        if self._sender is None:
            self._sender = await self._connect("notify")
        conn = self._sender
        small: list[str] = []
        for payload in payloads:
            if len(payload) * 4 > NOTIFY_LIMIT and len(payload.encode()) > NOTIFY_LIMIT:
                await self._ensure_table(conn)
                cur = await conn.execute(
                    "INSERT INTO pocketping_broker_frames (payload) VALUES (%s) RETURNING id", (payload,)
                )
                row = await cur.fetchone()
                payload = f"{self.origin} F {next(self._seq)} {row[0]}\n"
                if time.monotonic() - self._cleaned_at > 60:
                    self._cleaned_at = time.monotonic()
                    await conn.execute(
                        "DELETE FROM pocketping_broker_frames WHERE created < now() - interval '10 minutes'"
                    )
            small.append(payload)
        # One statement, one transaction: notifications are delivered in array order.
        await conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (self.channel, small))

    async def _send_reset(self) -> None:
        conn, self._sender = self._sender, None
        if conn is not None:
            await conn.close()

    async def stop(self) -> None:
        await super().stop()
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            with contextlib.suppress(Exception):
                await fetcher.close()

    async def _fetch_large(self, row_id: int) -> str | None:
        for _ in range(2):
            try:
                if self._fetcher is None:
                    self._fetcher = await self._connect("fetch")
                cur = await self._fetcher.execute(
                    "SELECT payload FROM pocketping_broker_frames WHERE id = %s", (row_id,)
                )
                row = await cur.fetchone()
                return None if row is None else str(row[0])
            except Exception as exc:
                log.warning("%s: reading large frame %d failed: %s", self, row_id, exc)
                fetcher, self._fetcher = self._fetcher, None
                if fetcher is not None:
                    with contextlib.suppress(Exception):
                        await fetcher.close()
        asyncio.get_running_loop().create_task(self._gap(time.time()))  # the frame is lost: catch up
        return None
