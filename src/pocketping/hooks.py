"""Running the user's hooks (``on_session_start``, ``on_message``, ``on_event``) off the request path.

A hook call is queued on its session's *lane*, a FIFO, and the request goes on. Lanes run on
their own schedule:

* plain functions run on a small pool of worker threads; a worker takes whichever lane has work
  and nobody running it, runs every call queued on it (in order), then takes the next lane;
* coroutine functions run on the event loop, one task per lane while it has work.

So calls of one session run one at a time, in the order they were queued, whatever mix of plain
and async hooks; a hook that blocks holds up its own session and one worker, never the streams
or other sessions (while other workers are free); and a burst of calls costs one queue
operation each, not a thread hop and a task each. The backlog is bounded per session and in
all; calls past the bound are dropped and logged. :meth:`HookRunner.stop` waits (up to a grace
period) for what is queued, so a server stopped with SIGTERM runs its pending calls first.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal

log = logging.getLogger("pocketping.handlers")

HookKind = Literal["session_start", "message", "event"]
KINDS: tuple[HookKind, ...] = ("session_start", "message", "event")

#: Seconds after which a worker still in one call counts as stuck (another one is woken).
STUCK = 0.02
#: Seconds calls wait to be handed over together.
FLUSH_DELAY = 0.001

#: (hook, its name for logs, arguments)
_Call = tuple[Callable[..., Any], str, tuple[Any, ...]]


class _Lane:
    __slots__ = ("session_id", "calls", "scheduled")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.calls: deque[_Call] = deque()
        #: True while a worker or a task owns the lane (queued to run, or running).
        self.scheduled = False


class HookRunner:
    """Ordered, isolated, bounded and drained hook calls for one :class:`~pocketping.PocketPing`.

    ``workers``: threads for plain-function hooks; ``max_pending_per_session`` and
    ``max_pending``: how many calls may wait (per session, in all) before new ones are dropped
    with a warning; ``grace``: seconds :meth:`stop` waits for pending calls.
    """

    def __init__(
        self,
        *,
        workers: int = 4,
        max_pending_per_session: int = 1000,
        max_pending: int = 20_000,
        grace: float = 10.0,
    ) -> None:
        if workers < 1:
            raise ValueError("hook workers must be at least 1")
        if max_pending_per_session < 1 or max_pending < 1:
            raise ValueError("hook backlog limits must be at least 1")
        self.workers = workers
        self.max_pending_per_session = max_pending_per_session
        self.max_pending = max_pending
        self.grace = grace
        self.hooks: dict[HookKind, list[Callable[..., Any]]] = {k: [] for k in KINDS}
        self.dropped = 0
        #: Dispatches so far (hooks registered for the kind); tests wait on it.
        self.dispatched = 0
        self._is_async: dict[Callable[..., Any], bool] = {}
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._pending = 0
        # Lanes waiting for a worker thread. A sleeping worker is woken (one ``_bell`` token
        # each) only when no awake worker will get to the lane soon: under load the awake
        # ones take lane after lane without a thread wake-up each.
        self._ready: deque[_Lane] = deque()
        self._bell: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._sleeping = 0
        self._rung = 0
        #: Per worker: monotonic start of the call it runs, 0.0 between calls.
        self._busy_since: list[float] = []
        self._watching = False
        self._loop_thread = 0
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._to_schedule: list[_Lane] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_at = 0.0

    # -- registration -----------------------------------------------------------------------

    def add(self, kind: HookKind, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"on_{kind} handler must be callable, not {type(fn).__name__}")
        self.hooks[kind].append(fn)
        # An object whose __call__ is a coroutine function counts as a coroutine hook too.
        self._is_async[fn] = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

    def has(self, kind: HookKind) -> bool:
        return bool(self.hooks[kind])

    @property
    def pending(self) -> int:
        """Calls queued or running."""
        return self._pending

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running event loop (coroutine hooks run there) and start the workers."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if any(not self._is_async[fn] for fns in self.hooks.values() for fn in fns):
            self._start_threads()
        self._flush()

    def _start_threads(self) -> None:
        with self._lock:
            self._busy_since = [0.0] * self.workers
            self._sleeping = self._rung = 0
        while len(self._threads) < self.workers:
            index = len(self._threads)
            t = threading.Thread(target=self._work, args=(index,), name=f"pocketping-hooks-{index}", daemon=True)
            t.start()
            self._threads.append(t)

    async def join(self, timeout: float = 10.0) -> bool:
        """Wait until every queued call has run (tests, scripts); False if ``timeout`` passed first."""
        self._flush()
        deadline = time.monotonic() + timeout
        while self._pending:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def stop(self, grace: float | None = None) -> None:
        """Run what is queued (up to ``grace`` s, default :attr:`grace`), then stop the workers."""
        if not await self.join(self.grace if grace is None else grace):
            log.warning("stopping with %d hook calls not run after %.1f s", self._pending, self.grace)
        threads, self._threads = self._threads, []
        for _ in threads:
            self._bell.put(False)
        self._loop = None

    # -- dispatch (on the event loop) -------------------------------------------------------

    def dispatch(self, kind: HookKind, session_id: str, *args: Any) -> None:
        """Queue a call of every ``kind`` hook with ``args`` on the session's lane."""
        fns = self.hooks[kind]
        if not fns:
            return
        self.dispatched += 1
        with self._lock:
            lane = self._lanes.get(session_id)
            if lane is None:
                lane = self._lanes[session_id] = _Lane(session_id)
            for fn in fns:
                if len(lane.calls) >= self.max_pending_per_session or self._pending >= self.max_pending:
                    self._drop(kind, session_id)
                    continue
                lane.calls.append((fn, kind, args))
                self._pending += 1
            if lane.scheduled or not lane.calls:
                return
            lane.scheduled = True
        # Handed over a moment later, all at once: the request's answer goes out first, and
        # the calls of a busy millisecond wake a worker once rather than once each.
        if not self._to_schedule and self._loop is not None:
            self._loop.call_later(FLUSH_DELAY, self._flush)
        self._to_schedule.append(lane)

    def discard(self, session_ids: Iterable[str]) -> int:
        """Drop the calls still waiting for these sessions (erased: their hooks must not see
        them); a call already running finishes. Returns how many were dropped."""
        dropped = 0
        with self._lock:
            for sid in session_ids:
                lane = self._lanes.get(sid)
                if lane is not None:
                    dropped += len(lane.calls)
                    self._pending -= len(lane.calls)
                    lane.calls.clear()
        return dropped

    def _drop(self, kind: str, session_id: str) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._warned_at > 5:
            self._warned_at = now
            log.warning(
                "hook backlog full: on_%s call dropped for session %s (%d dropped so far)",
                kind,
                session_id,
                self.dropped,
                extra={"session_id": session_id, "handler": kind},
            )

    def _flush(self) -> None:
        lanes, self._to_schedule = self._to_schedule, []
        for lane in lanes:
            self._run_lane(lane)

    def _run_lane(self, lane: _Lane) -> None:
        """Hand the lane to whoever runs its first call: a worker, or a task on the loop."""
        fn = lane.calls[0][0]
        if self._is_async[fn]:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._start_task, lane)
            return
        if not self._threads:
            self._start_threads()
        with self._lock:
            self._ready.append(lane)
            ring = self._should_ring()
        if ring:
            self._bell.put(True)
        elif not self._watching and self._loop is not None:
            # If the awake workers turn out to be stuck in slow hooks, wake another one.
            self._watching = True
            if threading.get_ident() == self._loop_thread:
                self._loop.call_later(STUCK, self._watch)
            else:
                self._loop.call_soon_threadsafe(self._loop.call_later, STUCK, self._watch)

    def _should_ring(self) -> bool:
        """Whether to wake a sleeping worker for the lanes in ``_ready`` (lock held): only when
        no awake worker will get to them soon. One awake worker takes lane after lane while
        hooks are quick; when it is stuck in a slow one, the watchdog wakes another."""
        if not self._ready or self._sleeping <= self._rung:
            return False
        awake = len(self._threads) - self._sleeping + self._rung
        if awake > 0:
            stuck_before = time.monotonic() - STUCK
            free = sum(1 for since in self._busy_since if since == 0.0 or since > stuck_before)
            free -= self._sleeping - self._rung  # sleepers' entries are 0.0 too
            if free > 0:
                return False
        self._rung += 1
        return True

    def _watch(self) -> None:
        with self._lock:
            ring = self._should_ring()
            self._watching = bool(self._ready)
        if ring:
            self._bell.put(True)
        if self._watching and self._loop is not None:
            self._loop.call_later(STUCK, self._watch)

    def _start_task(self, lane: _Lane) -> None:
        task = asyncio.get_running_loop().create_task(self._run_async(lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next(self, lane: _Lane, want_async: bool) -> _Call | None:
        """The lane's next call if it runs on this side; otherwise release or hand over the lane."""
        with self._lock:
            if lane.calls and self._is_async[lane.calls[0][0]] == want_async:
                return lane.calls.popleft()
            if not lane.calls:
                lane.scheduled = False
                if self._lanes.get(lane.session_id) is lane:
                    del self._lanes[lane.session_id]
                return None
        self._run_lane(lane)  # the other side runs the next call
        return None

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    # -- the two runners --------------------------------------------------------------------

    def _work(self, index: int) -> None:
        busy = self._busy_since
        while True:
            with self._lock:
                lane = self._ready.popleft() if self._ready else None
                if lane is None:
                    self._sleeping += 1
                elif self._should_ring():  # more lanes than free workers: wake a sleeper
                    ring = True
                else:
                    ring = False
            if lane is None:
                awake = self._bell.get()
                with self._lock:
                    self._sleeping -= 1
                    self._rung = max(0, self._rung - 1)
                if not awake:
                    return
                continue
            if ring:
                self._bell.put(True)
            while (call := self._next(lane, False)) is not None:
                fn, kind, args = call
                busy[index] = time.monotonic()
                try:
                    result = fn(*args)
                    if inspect.isawaitable(result) and self._loop is not None:
                        asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result()
                except Exception:
                    _log_failure(kind, fn, lane.session_id)
                finally:
                    busy[index] = 0.0
                    self._done()

    async def _run_async(self, lane: _Lane) -> None:
        while (call := self._next(lane, True)) is not None:
            fn, kind, args = call
            try:
                await fn(*args)
            except Exception:
                _log_failure(kind, fn, lane.session_id)
            finally:
                self._done()


async def _awaited(result: Any) -> Any:
    return await result


def _log_failure(kind: str, fn: Callable[..., Any], session_id: str) -> None:
    log.exception(
        "on_%s handler %s failed for session %s",
        kind,
        getattr(fn, "__qualname__", fn),
        session_id,
        extra={"session_id": session_id, "handler": kind},
    )
