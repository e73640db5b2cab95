"""Hooks against a real server: in order per session, isolated, bounded, drained at SIGTERM,
errors logged, and a few worker threads rather than a thread hop per call."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketping import MemoryStorage, PocketPing

from .conftest import SSEReader, connect, free_port, wait_healthy


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def recorder(kind: str) -> tuple[list[tuple[str, str, str]], Callable[..., Any]]:
    """A hook of either kind that takes a random few milliseconds and records what it saw."""
    seen: list[tuple[str, str, str]] = []

    if kind == "plain":

        def hook(session: Any, message: Any = None) -> None:
            time.sleep(random.uniform(0.001, 0.008))
            seen.append((session.id, "message" if message else "start", message.content if message else ""))

        return seen, hook

    async def ahook(session: Any, message: Any = None) -> None:
        await asyncio.sleep(random.uniform(0.001, 0.008))
        seen.append((session.id, "message" if message else "start", message.content if message else ""))

    return seen, ahook


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
def test_messages_reach_on_message_in_order(kind: str, serve: Callable[[PocketPing], str]) -> None:
    seen, hook = recorder(kind)
    # 60 messages per session in a few seconds: over the default messages_per_session.
    pp = PocketPing(storage=MemoryStorage(), on_session_start=hook, on_message=hook, rate_limits=None)
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        sids = [connect(http, visitor_id=f"visitor-{i}")["sessionId"] for i in range(3)]
        for n in range(60):
            for sid in sids:  # three sessions interleaved, each message acknowledged before the next
                r = http.post("/message", json={"sessionId": sid, "content": f"m{n}"})
                assert r.status_code == 200
    wait_until(lambda: len(seen) == 3 * 61)
    for sid in sids:
        mine = [(k, c) for s, k, c in seen if s == sid]
        assert mine == [("start", "")] + [("message", f"m{n}") for n in range(60)]


def test_mixed_plain_and_coroutine_hooks_keep_one_order_per_session(serve: Callable[[PocketPing], str]) -> None:
    order: list[str] = []

    def plain(session: Any, message: Any) -> None:
        time.sleep(random.uniform(0.001, 0.005))
        order.append("plain:" + message.content)

    async def coro(session: Any, message: Any) -> None:
        await asyncio.sleep(random.uniform(0.001, 0.005))
        order.append("coro:" + message.content)

    pp = PocketPing(storage=MemoryStorage())
    pp.on_message(plain)
    pp.on_message(coro)
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]
        for n in range(20):
            assert http.post("/message", json={"sessionId": sid, "content": str(n)}).status_code == 200
    wait_until(lambda: len(order) == 40)
    assert order == [f"{k}:{n}" for n in range(20) for k in ("plain", "coro")]


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
def test_a_blocking_hook_delays_neither_streams_nor_other_sessions(
    kind: str, serve: Callable[[PocketPing], str]
) -> None:
    release = threading.Event()
    others: list[str] = []

    if kind == "plain":

        def hook(session: Any, message: Any) -> None:
            if message.content == "block":
                release.wait(10)  # blocks its worker thread for seconds
            else:
                others.append(message.content)

    else:

        async def hook(session: Any, message: Any) -> None:  # type: ignore[misc]
            if message.content == "block":
                while not release.is_set():
                    await asyncio.sleep(0.05)
            else:
                others.append(message.content)

    pp = PocketPing(storage=MemoryStorage(), on_message=hook, sse_heartbeat=0.5)
    base = serve(pp)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            blocked = connect(http, visitor_id="blocked-visitor")["sessionId"]
            free = connect(http, visitor_id="free-visitor")["sessionId"]
            sse = SSEReader(f"{base}/stream?sessionId={blocked}")
            try:
                assert http.post("/message", json={"sessionId": blocked, "content": "block"}).status_code == 200
                sse.next(type="message")  # the visitor's own echo
                started = time.monotonic()
                # The blocked session's stream still gets pushes ...
                pp.sync.send_message(blocked, content="operator reply")
                frame = sse.next(timeout=2, type="message")
                assert frame["json"]["data"]["content"] == "operator reply"
                # ... and other sessions' hooks still run, while the first one is blocked.
                for n in range(5):
                    assert http.post("/message", json={"sessionId": free, "content": f"f{n}"}).status_code == 200
                wait_until(lambda: len(others) == 5, timeout=2)
                assert time.monotonic() - started < 2 and not release.is_set()
                # The blocked session's next call waits its turn, then runs.
                assert http.post("/message", json={"sessionId": blocked, "content": "after"}).status_code == 200
                time.sleep(0.2)
                assert "after" not in others
            finally:
                sse.close()
    finally:
        release.set()
    wait_until(lambda: "after" in others)


def test_a_failing_hook_is_logged_with_its_session_and_the_next_call_runs(
    serve: Callable[[PocketPing], str], caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def hook(session: Any, message: Any) -> None:
        if message.content == "boom":
            raise RuntimeError("hook failed on purpose")
        ran.append(message.content)

    pp = PocketPing(storage=MemoryStorage(), on_message=hook)
    base = serve(pp)
    with caplog.at_level(logging.ERROR, logger="pocketping.handlers"), httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]
        for text in ("one", "boom", "two"):
            assert http.post("/message", json={"sessionId": sid, "content": text}).status_code == 200
        wait_until(lambda: ran == ["one", "two"])
    failures = [r for r in caplog.records if "failed for session" in r.getMessage()]
    assert len(failures) == 1
    assert getattr(failures[0], "session_id", None) == sid and sid in failures[0].getMessage()
    assert failures[0].exc_info is not None and "on purpose" in str(failures[0].exc_info[1])


def test_the_backlog_is_bounded_and_overflow_is_logged(
    serve: Callable[[PocketPing], str], caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    ran: list[str] = []

    def hook(session: Any, message: Any) -> None:
        release.wait(10)
        ran.append(message.content)

    pp = PocketPing(storage=MemoryStorage(), on_message=hook, hook_backlog=10)
    base = serve(pp)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="pocketping.handlers"),
            httpx.Client(base_url=base, timeout=10) as http,
        ):
            sid = connect(http)["sessionId"]
            for n in range(30):
                assert http.post("/message", json={"sessionId": sid, "content": str(n)}).status_code == 200
            assert pp.hooks.pending <= 10
            assert pp.hooks.dropped == 20
        assert any("hook backlog full" in r.getMessage() for r in caplog.records)
    finally:
        release.set()
    wait_until(lambda: len(ran) == 10)
    assert ran == [str(n) for n in range(10)]  # the first ten, in order; the rest were refused
    # Every message was stored all the same.
    assert len(pp.sync.get_messages(sid)) == 30


def test_plain_hooks_run_on_a_few_worker_threads(serve: Callable[[PocketPing], str]) -> None:
    threads: set[str] = set()

    def hook(session: Any, message: Any = None) -> None:
        threads.add(threading.current_thread().name)

    pp = PocketPing(storage=MemoryStorage(), on_session_start=hook, on_message=hook, hook_workers=2)
    base = serve(pp)
    before = threading.active_count()
    with httpx.Client(base_url=base, timeout=10) as http:
        sids = [connect(http, visitor_id=f"v{i}")["sessionId"] for i in range(20)]
        for sid in sids:
            for n in range(10):
                http.post("/message", json={"sessionId": sid, "content": str(n)})
    assert pp.sync.run(pp.hooks.join(10))
    assert threads and all(name.startswith("pocketping-hooks-") for name in threads)
    assert len(threads) <= 2
    assert threading.active_count() <= before + 2


DRAIN_APP = """
import sys, time
from starlette.applications import Starlette
from starlette.routing import Mount
import uvicorn
from pocketping import PocketPing, SQLiteStorage

out = open(sys.argv[3], "a", buffering=1)

def on_message(session, message):
    time.sleep(0.05)
    out.write(message.content + "\\n")

pp = PocketPing(storage=SQLiteStorage(sys.argv[1]), on_message=on_message)
app = Starlette(routes=[Mount("/pocketping", app=pp.asgi_app)], lifespan=pp.lifespan)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def test_pending_hook_calls_run_before_the_server_exits_on_sigterm(tmp_path: Path) -> None:
    db, port, out = tmp_path / "drain.db", free_port(), tmp_path / "hooks.txt"
    proc = subprocess.Popen([sys.executable, "-c", DRAIN_APP, str(db), str(port), str(out)], env={**os.environ})
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/pocketping", timeout=10) as http:
            sid = connect(http)["sessionId"]
            for n in range(30):  # stored and answered at once; the hooks need 1.5 s in all
                assert http.post("/message", json={"sessionId": sid, "content": f"m{n}"}).status_code == 200
        written = out.read_text().split() if out.exists() else []
        assert len(written) < 30  # still pending when the signal arrives
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) in (0, -15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert out.read_text().split() == [f"m{n}" for n in range(30)]
