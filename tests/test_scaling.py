"""Scaling out: two uvicorn processes of one app (tests/apps/scale_app.py) on one PostgreSQL
database, joined by a real redis-server (RedisBroker) or by LISTEN/NOTIFY (PostgresBroker).

Every process started here is stopped by its PID; every wait has a deadline.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from . import services
from .conftest import SSEReader
from .services import AppProcess, RedisServer

HEADERS = {"X-PocketPing-Version": "2.6.0"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


class Pair:
    """Processes A and B of the same app, sharing a fresh database and a broker."""

    def __init__(self, kind: str, tmp: Path, redis_url: str, **extra: str) -> None:
        self.kind = kind
        self.dsn = services.fresh_database()
        self.events = tmp / "events.log"
        env = {
            "PP_DSN": self.dsn,
            "PP_BROKER": kind,
            "PP_REDIS_URL": redis_url,
            "PP_EVENTS_FILE": str(self.events),
            "PP_CHANNEL": "pair_" + "".join(c if c.isalnum() else "_" for c in tmp.name.lower()),
            **extra,
        }
        self.a = AppProcess("tests.apps.scale_app:app", env, tmp)
        self.b = AppProcess("tests.apps.scale_app:app", env, tmp)

    def start(self) -> Pair:
        self.a.start()
        self.b.start()
        return self

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()

    def logs(self) -> str:
        return f"--- A ---\n{self.a.output()}\n--- B ---\n{self.b.output()}"


@contextmanager
def pair_of(kind: str, tmp: Path, redis: RedisServer, **extra: str) -> Iterator[Pair]:
    pair = Pair(kind, tmp, redis.url, **extra)
    try:
        yield pair.start()
    finally:
        pair.stop()


def connect(base: str, visitor_id: str, session_id: str | None = None) -> dict[str, Any]:
    r = httpx.post(
        base + "/pocketping/connect",
        json={"visitorId": visitor_id, "sessionId": session_id, "metadata": {"url": "http://127.0.0.1/"}},
        headers=HEADERS,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def send(base: str, session_id: str, content: str) -> str:
    r = httpx.post(base + "/test/send", json={"sessionId": session_id, "content": content}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


class WSReader:
    """A WebSocket stream read on a thread; frames land in ``frames``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.error: BaseException | None = None
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.opened.wait(10) or self.ws is None:
            raise RuntimeError(f"WebSocket did not open: {self.error!r}")

    def _run(self) -> None:
        try:
            with ws_connect(self.url, open_timeout=10) as ws:
                self.ws = ws
                self.opened.set()
                while True:
                    self.frames.put(json.loads(ws.recv(timeout=60)))
        except Exception as exc:
            self.error = exc  # closed, by the test or the server
        finally:
            self.opened.set()

    def next(self, timeout: float = 5.0, type: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frames.get(timeout=max(0.01, deadline - time.monotonic()))
            if type is None or frame["type"] == type:
                return frame

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def close(self) -> None:
        self.ws.close()
        self.thread.join(5)


def stream_urls(base: str, sid: str) -> tuple[str, str]:
    return base + f"/pocketping/stream?sessionId={sid}", base.replace("http://", "ws://") + (
        f"/pocketping/stream?sessionId={sid}"
    )


def collect_message_ids(next_frame: Any, expected: set[str], timeout: float, settle: float = 1.5) -> list[str]:
    """Message ids a stream delivers until every expected id arrived (or ``timeout``), plus
    ``settle`` seconds more to catch late duplicates."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    while True:
        now = time.monotonic()
        if settle_until is None and expected <= set(got):
            settle_until = now + settle
        end = settle_until if settle_until is not None else deadline
        if now >= end:
            return got
        try:
            frame = next_frame(max(0.01, end - now))
        except queue.Empty:
            continue
        if frame["type"] == "message":
            got.append(frame["data"]["id"])


def sse_next(reader: SSEReader) -> Any:
    return lambda timeout: reader.next(timeout)["json"]


def ws_next(reader: WSReader) -> Any:
    return lambda timeout: reader.next(timeout)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_reply_sent_through_b_reaches_ws_and_sse_on_a(kind: str, tmp_path: Path, redis_server: RedisServer) -> None:
    with pair_of(kind, tmp_path, redis_server) as pair:
        sid = connect(pair.a.url, "visitor-cross")["sessionId"]
        sse_url, ws_url = stream_urls(pair.a.url, sid)
        sse = SSEReader(sse_url)
        ws = WSReader(ws_url)
        try:
            time.sleep(0.3)  # both streams subscribed
            sent = [send(pair.b.url, sid, f"reply {i} from B") for i in range(5)]
            sent.append(send(pair.a.url, sid, "reply from A itself"))
            for label, nxt in (("sse", sse_next(sse)), ("ws", ws_next(ws))):
                got = collect_message_ids(nxt, set(sent), timeout=10)
                assert got == sent, f"{label} on A got {got}, expected {sent} exactly once {ws.error!r}\n{pair.logs()}"
        finally:
            sse.close()
            ws.close()


def test_rate_limits_hold_across_processes(tmp_path: Path, redis_server: RedisServer) -> None:
    """With a Redis broker both processes count new sessions from one address together."""
    with pair_of("redis", tmp_path, redis_server, PP_SESSIONS_PER_IP="4/minute") as pair:
        codes = []
        for i, base in enumerate([pair.a.url, pair.b.url] * 3):
            r = httpx.post(
                base + "/pocketping/connect",
                json={"visitorId": f"v{i}", "sessionId": None},
                headers=HEADERS,
                timeout=10,
            )
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 200, 429, 429], pair.logs()
        assert r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_session_started_on_a_resumes_on_b(kind: str, tmp_path: Path, redis_server: RedisServer) -> None:
    with pair_of(kind, tmp_path, redis_server) as pair:
        first = connect(pair.a.url, "visitor-resume")
        mid = send(pair.a.url, first["sessionId"], "said on A")
        again = connect(pair.b.url, "visitor-resume", first["sessionId"])
        assert again["sessionId"] == first["sessionId"]
        assert [m["id"] for m in again["messages"]] == [mid]
        lost = connect(pair.b.url, "visitor-resume")  # session id forgotten: found by visitor id
        assert lost["sessionId"] == first["sessionId"]


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_widget_event_on_a_runs_on_event_once(kind: str, tmp_path: Path, redis_server: RedisServer) -> None:
    with pair_of(kind, tmp_path, redis_server) as pair:
        sid = connect(pair.a.url, "visitor-event")["sessionId"]
        # B has a stream on the same session: the event must not run B's handler too.
        ws_b = WSReader(stream_urls(pair.b.url, sid)[1])
        ws_a = WSReader(stream_urls(pair.a.url, sid)[1])
        try:
            time.sleep(0.3)
            ws_a.send({"type": "event", "data": {"name": "clicked_pricing", "data": {"plan": "pro"}}})
            deadline = time.monotonic() + 10
            while not (pair.events.exists() and pair.events.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.5)  # a second run would show up by now
            lines = pair.events.read_text().splitlines() if pair.events.exists() else []
            a_pid = httpx.get(pair.a.url + "/test/health", timeout=5).json()["pid"]
            assert lines == [f"{a_pid} {sid} clicked_pricing"], f"{lines}\n{pair.logs()}"
        finally:
            ws_a.close()
            ws_b.close()


def test_postgres_broker_carries_frames_over_the_notify_limit(tmp_path: Path, redis_server: RedisServer) -> None:
    with pair_of("postgres", tmp_path, redis_server) as pair:
        sid = connect(pair.a.url, "visitor-big")["sessionId"]
        sse = SSEReader(stream_urls(pair.a.url, sid)[0])
        try:
            time.sleep(0.3)
            big = "€" * 3500  # 10,500 bytes of UTF-8: over NOTIFY's 8,000-byte limit
            mid = send(pair.b.url, sid, big)
            event = sse.next(timeout=10, type=None)
            while event["json"]["type"] != "message":
                event = sse.next(timeout=10)
            assert event["json"]["data"]["id"] == mid and event["json"]["data"]["content"] == big
            rows = services.shared_postgres().execute(
                "SELECT count(*) FROM pocketping_broker_frames", dbname=pair.dsn.rsplit("/", 1)[1]
            )
            assert rows[0][0] >= 1, "the large frame went through the table"
        finally:
            sse.close()


def test_redis_restart_loses_and_duplicates_nothing(tmp_path: Path, redis_server: RedisServer) -> None:
    with pair_of("redis", tmp_path, redis_server) as pair:
        sid = connect(pair.a.url, "visitor-redis-gap")["sessionId"]
        sse = SSEReader(stream_urls(pair.a.url, sid)[0])
        ws = WSReader(stream_urls(pair.a.url, sid)[1])
        try:
            time.sleep(0.3)
            sent = [send(pair.b.url, sid, "before the outage")]
            redis_server.kill()
            # Sending never fails during the outage; the messages are stored.
            sent += [send(pair.b.url, sid, f"during the outage {i}") for i in range(3)]
            sent.append(send(pair.a.url, sid, "from A during the outage"))
            time.sleep(0.5)
            redis_server.start()
            sent.append(send(pair.b.url, sid, "right after the restart"))
            for label, nxt in (("sse", sse_next(sse)), ("ws", ws_next(ws))):
                got = collect_message_ids(nxt, set(sent), timeout=20, settle=2.0)
                assert sorted(got) == sorted(sent) and len(got) == len(set(got)), (
                    f"{label}: got {got}, sent {sent}\n{pair.logs()}"
                )
            _wait_reconnected(pair)
            later = send(pair.b.url, sid, "after recovery")
            assert collect_message_ids(sse_next(sse), {later}, timeout=10) == [later]
        finally:
            sse.close()
            ws.close()


def test_postgres_listen_connection_killed_loses_and_duplicates_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with pair_of("postgres", tmp_path, redis_server) as pair:
        sid = connect(pair.a.url, "visitor-pg-gap")["sessionId"]
        sse = SSEReader(stream_urls(pair.a.url, sid)[0])
        try:
            time.sleep(0.3)
            sent = [send(pair.b.url, sid, "before")]
            assert collect_message_ids(sse_next(sse), set(sent), timeout=10, settle=0) == sent
            pg, db = services.shared_postgres(), pair.dsn.rsplit("/", 1)[1]
            # Keep the listeners out for a while (open connections stay usable), then kill them.
            pg.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            try:
                killed = pg.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE %s AND datname = %s",
                    ("%listen%", db),
                )
                assert len(killed) == 2, f"one LISTEN connection per process, found {len(killed)}"
                sent += [send(pair.b.url, sid, f"in the gap {i}") for i in range(5)]
                time.sleep(0.5)
            finally:
                pg.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
            sent.append(send(pair.b.url, sid, "after the gap"))
            got = collect_message_ids(sse_next(sse), set(sent[1:]), timeout=20, settle=2.0)
            assert sorted(got) == sorted(sent[1:]) and len(got) == len(set(got)), (
                f"got {got}, sent {sent[1:]}\n{pair.logs()}"
            )
            _wait_reconnected(pair)
            later = send(pair.b.url, sid, "after recovery")
            assert collect_message_ids(sse_next(sse), {later}, timeout=10) == [later]
        finally:
            sse.close()


def _wait_reconnected(pair: Pair, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [httpx.get(p.url + "/test/health", timeout=5).json() for p in (pair.a, pair.b)]
        if all(s["ready"] and s["reconnects"] >= 1 for s in states):
            return
        time.sleep(0.1)
    raise AssertionError(f"brokers did not report a reconnect: {states}\n{pair.logs()}")
