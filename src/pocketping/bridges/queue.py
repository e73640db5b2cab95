"""The bridges' hub: core hooks in, a durable outbox, and the worker that empties it.

Every platform call is first written to the storage's outbox (``outbox_add``), then run by a
background worker started with ``PocketPing.start()``. Jobs of one (bridge, session) line run
one at a time in order; lines run in parallel. A failed call is retried with exponential backoff
capped at the bridge's ``retry_cap`` (a 429's Retry-After is honoured instead); a call the
platform refuses for good (bad token, missing rights) is kept as ``dead`` and logged. Jobs are
idempotent (``<bridge>:done:<key>``), so a restart never posts a message twice once its success
was recorded, and Discord's message nonces cover the instant between the post and that record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.routing import Route

from ..chat import ChatListener
from ..errors import BridgeError, StorageCapabilityError
from ..models import Message, Session
from ..storage.base import BaseStorage
from .base import Bridge, TemporaryBridgeError, cancel

if TYPE_CHECKING:
    from ..core import PocketPing

log = logging.getLogger("pocketping.bridges")

#: At start, messages of the last RECOVERY_WINDOW (in up to RECOVERY_SESSIONS sessions, the
#: most recently active) are queued again, in case the previous process died between storing
#: one and queueing it.
RECOVERY_WINDOW = timedelta(minutes=15)
RECOVERY_SESSIONS = 1000

_CAPABILITY = ("outbox_add", "outbox_claim", "outbox_done", "outbox_retry", "outbox_next_due", "bridge_key_get")


def _now_ms() -> int:
    return int(time.time() * 1000)


def has_bridge_capability(storage: BaseStorage) -> bool:
    return all(getattr(type(storage), m) is not getattr(BaseStorage, m) for m in _CAPABILITY)


class BridgeHub(ChatListener):
    """Owns the configured bridges for one :class:`~pocketping.PocketPing`.

    ``lease`` (s): how long a claimed job may run before another worker may take it over;
    ``idle_poll`` (s): how often an idle worker looks for jobs queued by other processes.
    """

    def __init__(self, pp: PocketPing, bridges: list[Bridge]) -> None:
        names = [b.name for b in bridges]
        for b in bridges:
            if not isinstance(b, Bridge):
                raise TypeError(f"bridges must be TelegramBridge, SlackBridge or DiscordBridge, not {b!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"one bridge per platform, got {names}")
        self.pp = pp
        self.bridges = list(bridges)
        self.by_name = {b.name: b for b in bridges}
        self.lease = 60.0
        self.idle_poll = 1.0
        self.batch = 32
        self._store: BaseStorage | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[int] | None = None
        self._running: dict[asyncio.Task[None], dict[str, Any]] = {}

    @property
    def store(self) -> BaseStorage:
        if self._store is None:
            if has_bridge_capability(self.pp.storage):
                self._store = self.pp.storage
            else:
                from ..storage.memory import MemoryStorage

                log.warning(
                    "%s has no outbox_*/bridge_key_* methods: bridge deliveries and thread mappings are kept "
                    "in memory and lost on restart; use SQLiteStorage or PostgresStorage for durable delivery",
                    type(self.pp.storage).__name__,
                    extra={"session_id": None, "bridge": None},
                )
                self._store = MemoryStorage(outbox_only=True)
        return self._store

    def routes(self) -> list[Route]:
        return [route for b in self.bridges for route in b.routes()]

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        for b in self.bridges:
            await b.start(self)
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="pocketping-bridges")
        self._recovery = asyncio.get_running_loop().create_task(self.recover(), name="pocketping-bridges-recover")

    async def recover(self, window: timedelta = RECOVERY_WINDOW) -> int:
        """Queue again every message of the last ``window`` that a bridge has not shown yet: a
        process stopped between storing a message and queueing it (a crash, SIGKILL) would
        otherwise never relay it. A job still queued may be queued twice; the second finds the
        first's ``done`` key and is skipped, so nothing is posted twice. Returns how many
        messages were looked at."""
        since = datetime.now(UTC) - window
        seen = 0
        try:
            for session in await self.pp.chat.list_sessions(limit=RECOVERY_SESSIONS, include_closed=True):
                if (session.last_activity or session.created_at) < since:
                    break
                for message in await self.pp.chat.catch_up(session.id, since):
                    if message.deleted_at is not None or message.created_at < since:
                        continue
                    seen += 1
                    if message.sender == "visitor":
                        await self.visitor_message(session, message, missing=True)
                    else:
                        await self.operator_message(message, missing=True)
        except Exception as exc:  # a storage without list_sessions, say: nothing to recover from
            log.warning("bridge recovery skipped: %s", exc, extra={"session_id": None, "bridge": None})
        return seen

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        await cancel(worker)
        recovery, self._recovery = self._recovery, None
        await cancel(recovery)
        if self._running:
            running = dict(self._running)
            _done, pending = await asyncio.wait(set(running), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in pending:  # interrupted: run again (soon) on the next start
                await self.store.outbox_retry(running[task]["id"], due_ms=0, error="interrupted by shutdown")
            self._running.clear()
        for b in self.bridges:
            try:
                await b.stop()
            except Exception:
                log.exception("stopping bridge failed", extra={"session_id": None, "bridge": b.name})

    # -- core hooks (never raise) -----------------------------------------------------------

    async def enqueue(self, bridge: str, session_id: str, kind: str, key: str, payload: dict[str, Any]) -> None:
        await self.store.outbox_add(bridge, session_id, kind, key, payload)
        self._wake.set()

    async def _fan_out(
        self, session_id: str, kind: str, key: str, payload: dict[str, Any], skip: Any = None, *, missing: bool = False
    ) -> None:
        """Queue the job for every bridge but ``skip``; with ``missing``, only for bridges
        where it has not run yet (recovery)."""
        for b in self.bridges:
            if b.name == skip:
                continue
            try:
                if missing and await self.store.bridge_key_get(f"{b.name}:done:{key}") is not None:
                    continue
                await self.enqueue(b.name, session_id, kind, key, payload)
            except (StorageCapabilityError, Exception):
                log.exception(
                    "could not queue %s for the bridge", kind, extra={"session_id": session_id, "bridge": b.name}
                )

    async def session_started(self, session: Session) -> None:
        await self._fan_out(session.id, "open", f"open:{session.id}", {})

    async def visitor_message(
        self, session: Session, message: Message, reopened: bool = False, *, missing: bool = False
    ) -> None:
        payload: dict[str, Any] = {"message_id": message.id}
        if reopened:
            payload["reopened"] = True
        await self._fan_out(session.id, "message", f"msg:{message.id}", payload, missing=missing)

    async def operator_message(self, message: Message, *, missing: bool = False) -> None:
        """Show operator messages sent elsewhere (code, console, another bridge) in each thread."""
        if message.sender == "visitor":
            return
        source = message.metadata.get("bridge")
        payload = {"message_id": message.id}
        await self._fan_out(message.session_id, "operator", f"msg:{message.id}", payload, source, missing=missing)

    async def message_changed(self, message: Message) -> None:
        """Mirror an edit or a delete (from the widget, code or the console) to the threads."""
        kind = "delete" if message.deleted_at is not None else "edit"
        stamp = int(message.cursor.timestamp() * 1000)
        key = f"{kind}:{message.id}:{stamp}"
        await self._fan_out(message.session_id, kind, key, {"message_id": message.id}, message.metadata.get("bridge"))

    async def rating_received(self, session: Session, rating: dict[str, Any]) -> None:
        """Show the visitor's rating in each thread (a session is rated once)."""
        await self._fan_out(session.id, "csat", f"csat:{session.id}", {"rating": rating})

    async def session_closed(self, session: Session, skip: str | None = None) -> None:
        await self._fan_out(session.id, "close", f"close:{session.id}:{_now_ms()}", {}, skip)

    async def sessions_erased(self, session_ids: Sequence[str]) -> None:
        """Cancel this process's deliveries for erased sessions (their outbox rows and keys
        are already gone; the storage refuses keys for them, so other processes' deliveries
        in flight keep nothing either)."""
        doomed = set(session_ids)
        stopping = [task for task, job in self._running.items() if job["session_id"] in doomed]
        for task in stopping:
            task.cancel()
        if stopping:
            await asyncio.wait(stopping, timeout=5)  # the erasure holds locks: never wait long
        if self._store is not None and self._store is not self.pp.storage:
            await self._store.delete_sessions(list(doomed))  # the in-memory outbox of a storage without one
            log.info(
                "cancelled %d deliveries of erased sessions", len(stopping), extra={"session_id": None, "bridge": None}
            )

    # -- the worker -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                room = self.batch - len(self._running)
                jobs = await self.store.outbox_claim(now_ms=_now_ms(), lease_ms=int(self.lease * 1000), limit=room)
                for job in jobs:
                    task = asyncio.get_running_loop().create_task(self._process(job))
                    self._running[task] = job
                    task.add_done_callback(self._finished)
                if jobs and len(self._running) < self.batch:
                    continue
                due = await self.store.outbox_next_due()
                delay = self.idle_poll if due is None else min(self.idle_poll, max(0.0, (due - _now_ms()) / 1000))
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bridge worker error; retrying in 1 s", extra={"session_id": None, "bridge": None})
                await asyncio.sleep(1)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()

    def backoff(self, bridge: Bridge, attempts: int) -> float:
        return float(min(bridge.retry_cap, bridge.retry_base * 2**attempts) * random.uniform(0.8, 1.0))

    async def _process(self, job: dict[str, Any]) -> None:
        sid, name = job["session_id"], job["bridge"]
        extra = {"session_id": sid, "bridge": name}
        bridge = self.by_name.get(name)
        if bridge is None:
            await self.store.outbox_retry(job["id"], due_ms=_now_ms() + 60_000, error="bridge not configured")
            return
        if job.get("reclaimed"):
            log.warning("taking over a %s job whose attempt was interrupted", job["kind"], extra=extra)
        try:
            await bridge.deliver(job)
        except TemporaryBridgeError as exc:
            delay = self.backoff(bridge, job["attempts"])
            if exc.retry_after is not None:
                delay = min(max(exc.retry_after, 0.0), 600.0)
            log.warning(
                "%s job failed (%s); retry %d in %.2f s", job["kind"], exc, job["attempts"] + 1, delay, extra=extra
            )
            await self.store.outbox_retry(job["id"], due_ms=_now_ms() + int(delay * 1000), error=str(exc))
        except BridgeError as exc:
            log.error("%s job refused by the platform, not retried: %s", job["kind"], exc, extra=extra)
            await self.store.outbox_retry(job["id"], due_ms=_now_ms(), error=str(exc), dead=True)
        except Exception as exc:
            dead = job["attempts"] >= 9
            log.exception("%s job failed unexpectedly%s", job["kind"], " (giving up)" if dead else "", extra=extra)
            delay = self.backoff(bridge, job["attempts"])
            await self.store.outbox_retry(job["id"], due_ms=_now_ms() + int(delay * 1000), error=repr(exc), dead=dead)
        else:
            await self.store.outbox_done(job["id"])

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the outbox has nothing due (tests, scripts). True if it emptied in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running and await self.store.outbox_next_due() is None:
                return True
            await asyncio.sleep(0.02)
        return False
