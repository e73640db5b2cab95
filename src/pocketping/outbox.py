"""The durable outbox: everything that leaves the process goes through it.

A job is a row of the storage's outbox (``outbox_add``), written before the caller is answered,
for one :class:`Destination` (a bridge, a webhook endpoint) and one session. A background worker
started with ``PocketPing.start()`` claims due jobs (``outbox_claim``, with a lease so that a job
of a killed process is taken over), and runs them: the jobs of one (destination, session) line
one at a time in order, lines in parallel, on every process sharing the storage. A failure the
destination marks temporary (:class:`~pocketping.errors.TemporaryDeliveryError`: network errors,
5xx, 429) is retried after the destination's delay (a ``Retry-After`` honoured instead); one it
refuses for good (:class:`~pocketping.errors.DeliveryError`) is kept as ``dead`` and logged.
Destinations make their jobs idempotent with done keys (``bridge_key_set``), so a restart never
repeats a job whose success was recorded.
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

from .chat import ChatListener
from .errors import DeliveryError, InvalidInput, TemporaryDeliveryError
from .storage.base import BaseStorage

if TYPE_CHECKING:
    from .core import PocketPing

log = logging.getLogger("pocketping.outbox")

_CAPABILITY = ("outbox_add", "outbox_claim", "outbox_done", "outbox_retry", "outbox_next_due", "bridge_key_get")
#: Attempts after which a job failing with an unexpected exception is given up (kept as dead).
UNEXPECTED_ATTEMPTS = 10
#: The longest a destination's Retry-After is followed.
MAX_RETRY_AFTER = 3600.0
#: At start, messages of the last RECOVERY_WINDOW (in up to RECOVERY_SESSIONS sessions, the
#: most recently active) are given to the listeners again, in case the previous process died
#: between storing one and queueing its jobs.
RECOVERY_WINDOW = timedelta(minutes=15)
RECOVERY_SESSIONS = 1000


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Stop a background task and wait until it has ended."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def has_outbox_capability(storage: BaseStorage) -> bool:
    return all(getattr(type(storage), m) is not getattr(BaseStorage, m) for m in _CAPABILITY)


class Destination:
    """Where outbox jobs go. ``name`` is its line in the outbox (stable across restarts);
    :meth:`deliver` runs one job and raises :class:`TemporaryDeliveryError` to be retried,
    :class:`DeliveryError` to give up; :meth:`retry_delay` is the wait before attempt
    ``attempts + 1`` (None: give up)."""

    name = ""
    retry_base = 0.5
    retry_cap = 15.0
    #: The logger its jobs' outcomes are logged to, and what refuses them, for log lines.
    logger = "pocketping.outbox"
    refuser = "its destination"

    async def deliver(self, job: dict[str, Any]) -> None:
        raise DeliveryError(f"{type(self).__name__} delivers nothing")

    #: Seconds before each retry, when a destination has a fixed schedule (then up to 20 %
    #: jitter, and the job is dead after the last); None: exponential from ``retry_base``.
    retry_schedule: tuple[float, ...] | None = None

    def retry_delay(self, attempts: int) -> float | None:
        """The wait before attempt ``attempts + 1``, with jitter: from ``retry_schedule`` (None
        past its end), else exponential from ``retry_base``, capped at ``retry_cap``."""
        if self.retry_schedule is not None:
            if attempts >= len(self.retry_schedule):
                return None
            return self.retry_schedule[attempts] * random.uniform(0.8, 1.0)
        return float(min(self.retry_cap, self.retry_base * 2**attempts) * random.uniform(0.8, 1.0))

    async def started(self, outbox: Outbox) -> None:
        """The outbox is starting (open clients, read state)."""

    async def stopped(self) -> None:
        """The outbox has stopped (close clients)."""


class AppDestination(Destination, ChatListener):
    """A destination that also listens to the chat service (the e-mail follow-up, the AI
    responder): :meth:`bind` attaches it to one app, as ``PocketPing(<setting>=...)`` does."""

    #: The ``PocketPing`` argument it is given as, for error messages.
    setting = ""
    _pp: PocketPing | None = None

    def bind(self, pp: PocketPing) -> None:
        if self._pp is not None and self._pp is not pp:
            raise InvalidInput(f"an {type(self).__name__} serves one PocketPing app")
        self.check_app(pp)
        self._pp = pp
        pp.outbox.add(self)
        pp.chat.listeners.append(self)

    def check_app(self, pp: PocketPing) -> None:
        """Raise :class:`InvalidInput` when ``pp`` lacks a setting this destination needs."""

    @property
    def pp(self) -> PocketPing:
        if self._pp is None:
            name = type(self).__name__
            raise RuntimeError(f"the {name} is not attached to an app: pass it as PocketPing({self.setting}=...)")
        return self._pp


class Outbox(ChatListener):
    """One app's outbox and its worker; destinations register with :meth:`add`.

    ``lease`` (s): how long a claimed job may run before another worker may take it over;
    ``idle_poll`` (s): how often an idle worker looks for jobs queued by other processes.
    """

    def __init__(self, pp: PocketPing) -> None:
        self.pp = pp
        self.destinations: dict[str, Destination] = {}
        self.lease = 60.0
        self.idle_poll = 1.0
        self.batch = 32
        self._store: BaseStorage | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], dict[str, Any]] = {}
        self._recovery: asyncio.Task[int] | None = None

    def add(self, destination: Destination) -> None:
        if not destination.name or destination.name in self.destinations:
            raise ValueError(f"outbox destinations need distinct names, not {destination.name!r}")
        self.destinations[destination.name] = destination

    @property
    def store(self) -> BaseStorage:
        """The app's storage, or, when it has no outbox methods, one in memory (logged)."""
        if self._store is None:
            if has_outbox_capability(self.pp.storage):
                self._store = self.pp.storage
            else:
                from .storage.memory import MemoryStorage

                log.warning(
                    "%s has no outbox_*/bridge_key_* methods: deliveries (bridges, webhooks) and thread mappings "
                    "are kept in memory and lost on restart; use SQLiteStorage or PostgresStorage for durable delivery",
                    type(self.pp.storage).__name__,
                    extra={"session_id": None, "bridge": None},
                )
                self._store = MemoryStorage(outbox_only=True)
        return self._store

    @property
    def durable(self) -> bool:
        return self.store is self.pp.storage

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None

    async def start(self) -> None:
        if self._worker is not None:
            return
        self._wake = asyncio.Event()
        for destination in self.destinations.values():
            await destination.started(self)
        loop = asyncio.get_running_loop()
        self._worker = loop.create_task(self._run(), name="pocketping-outbox")
        self._recovery = loop.create_task(self.recover_recent(), name="pocketping-outbox-recover")

    async def recover_recent(self, window: timedelta = RECOVERY_WINDOW) -> int:
        """Give every listener the messages of the last ``window`` again
        (:meth:`~pocketping.chat.ChatListener.recover`): a process stopped between storing a
        message and queueing its jobs (a crash, SIGKILL) would otherwise never relay it.
        Returns how many messages were looked at."""
        since = datetime.now(UTC) - window
        chat = self.pp.chat
        seen = 0
        try:
            for session in await chat.list_sessions(limit=RECOVERY_SESSIONS, include_closed=True):
                if (session.last_activity or session.created_at) < since:
                    break
                recent = [
                    m for m in await chat.catch_up(session.id, since) if m.deleted_at is None and m.created_at >= since
                ]
                if not recent:
                    continue
                seen += len(recent)
                for listener in list(chat.listeners):
                    await listener.recover(session, recent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a storage without list_sessions, say: nothing to recover from
            log.warning("outbox recovery skipped: %s", exc, extra={"session_id": None, "bridge": None})
        return seen

    async def stop(self) -> None:
        recovery, self._recovery = self._recovery, None
        await cancel(recovery)
        worker, self._worker = self._worker, None
        await cancel(worker)
        if self._running:
            running = dict(self._running)
            _done, pending = await asyncio.wait(set(running), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in pending:  # interrupted: run again (soon) on the next start
                await self.store.outbox_retry(running[task]["id"], due_ms=0, error="interrupted by shutdown")
            self._running.clear()
        for destination in self.destinations.values():
            try:
                await destination.stopped()
            except Exception:
                log.exception("stopping %s failed", destination.name, extra={"session_id": None, "bridge": None})

    # -- queueing ---------------------------------------------------------------------------

    async def enqueue(
        self,
        destination: str,
        session_id: str,
        kind: str,
        key: str,
        payload: dict[str, Any],
        *,
        delay: float = 0.0,
    ) -> None:
        """Write a job (durably, before returning) and wake the worker. ``delay`` (s): the job
        is due that much later, across restarts; until then it holds its (destination,
        session) line, so later jobs of the line wait behind it."""
        due_ms = now_ms() + int(delay * 1000) if delay > 0 else 0
        if due_ms:
            await self.store.outbox_add(destination, session_id, kind, key, payload, due_ms=due_ms)
        else:
            await self.store.outbox_add(destination, session_id, kind, key, payload)
        self._wake.set()

    async def sessions_erased(self, session_ids: Sequence[str]) -> None:
        """Cancel this process's jobs in flight for erased sessions (their rows and done keys
        are already gone; the storage refuses keys for them, so other processes' jobs in flight
        keep nothing either)."""
        doomed = set(session_ids)
        stopping = [task for task, job in self._running.items() if job["session_id"] in doomed]
        for task in stopping:
            task.cancel()
        if stopping:
            await asyncio.wait(stopping, timeout=5)  # the erasure holds locks: never wait long
            quiet = {"session_id": None, "bridge": None}
            log.info("cancelled %d deliveries of erased sessions", len(stopping), extra=quiet)
        if self._store is not None and not self.durable:
            await self._store.delete_sessions(list(doomed))  # the in-memory outbox of a storage without one

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is due or running (tests, scripts). True if it emptied in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running and await self.store.outbox_next_due() is None:
                return True
            await asyncio.sleep(0.02)
        return False

    # -- the worker -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                room = self.batch - len(self._running)
                jobs = await self.store.outbox_claim(now_ms=now_ms(), lease_ms=int(self.lease * 1000), limit=room)
                for job in jobs:
                    task = asyncio.get_running_loop().create_task(self._process(job))
                    self._running[task] = job
                    task.add_done_callback(self._finished)
                if jobs and len(self._running) < self.batch:
                    continue
                due = await self.store.outbox_next_due()
                delay = self.idle_poll if due is None else min(self.idle_poll, max(0.0, (due - now_ms()) / 1000))
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox worker error; retrying in 1 s", extra={"session_id": None, "bridge": None})
                await asyncio.sleep(1)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()

    async def _process(self, job: dict[str, Any]) -> None:
        sid, name = job["session_id"], job["bridge"]
        extra = {"session_id": sid, "bridge": name}
        destination = self.destinations.get(name)
        if destination is None:
            await self.store.outbox_retry(job["id"], due_ms=now_ms() + 60_000, error="destination not configured")
            return
        log = logging.getLogger(destination.logger)
        if job.get("reclaimed"):
            log.warning("taking over a %s job whose attempt was interrupted", job["kind"], extra=extra)
        try:
            await destination.deliver(job)
        except TemporaryDeliveryError as exc:
            delay = destination.retry_delay(job["attempts"])
            if delay is None:
                log.error(
                    "%s job failed (%s); giving up after %d attempts",
                    job["kind"],
                    exc,
                    job["attempts"] + 1,
                    extra=extra,
                )
                await self.store.outbox_retry(job["id"], due_ms=now_ms(), error=str(exc), dead=True)
                return
            if exc.retry_after is not None:
                delay = min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER)
            log.warning(
                "%s job failed (%s); retry %d in %.2f s", job["kind"], exc, job["attempts"] + 1, delay, extra=extra
            )
            await self.store.outbox_retry(job["id"], due_ms=now_ms() + int(delay * 1000), error=str(exc))
        except DeliveryError as exc:
            log.error("%s job refused by %s, not retried: %s", job["kind"], destination.refuser, exc, extra=extra)
            await self.store.outbox_retry(job["id"], due_ms=now_ms(), error=str(exc), dead=True)
        except Exception as exc:
            dead = job["attempts"] + 1 >= UNEXPECTED_ATTEMPTS
            log.exception("%s job failed unexpectedly%s", job["kind"], " (giving up)" if dead else "", extra=extra)
            delay = destination.retry_delay(job["attempts"]) or 0.0
            await self.store.outbox_retry(job["id"], due_ms=now_ms() + int(delay * 1000), error=repr(exc), dead=dead)
        else:
            await self.store.outbox_done(job["id"])
