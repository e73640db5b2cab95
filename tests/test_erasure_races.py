"""Erasure wins every race: ``forget`` and ``purge`` run while the visitor sends messages and
uploads files and while a bridge delivery is in flight (fake Telegram on 127.0.0.1 with platform
latency), on SQLite and PostgreSQL behind a real uvicorn server. Afterwards nothing about the
visitor can be uploaded, completed, downloaded or written again, no request got a 500, no row
is left that a later erasure could not find, and SQLite's files hold no copy of erased text."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketping import MemoryStorage, PocketPing, SessionNotFound, SQLiteStorage
from pocketping.files import LocalFileStore
from pocketping.models import Message, Session

from . import services
from .fakes.harness import VISITOR_META, Visitor, eventually, key
from .fakes.telegram import FakeTelegram
from .test_retention import PNG, make_pp

HEADERS = {"X-PocketPing-Version": "2.6.0"}
#: A download whose file was erased after its headers were sent: the transfer is cut off.
CUT = 0
#: Statuses a request racing an erasure may get: done before it, refused after it, or cut off.
RACING = {200, 400, 403, 404, CUT}


def _storage(kind: str, tmp: Path) -> tuple[Any, Callable[[str], dict[str, int]]]:
    """A storage of ``kind`` and a function counting, straight from the database, the rows
    that mention a session (sessions, messages, outbox rows, bridge keys)."""
    if kind == "sqlite":
        path = tmp / "pp.db"

        def count_sqlite(sid: str) -> dict[str, int]:
            with sqlite3.connect(path) as db:
                return {
                    "sessions": db.execute("SELECT count(*) FROM sessions WHERE id = ?", (sid,)).fetchone()[0],
                    "messages": db.execute("SELECT count(*) FROM messages WHERE session_id = ?", (sid,)).fetchone()[0],
                    "outbox": db.execute("SELECT count(*) FROM bridge_outbox WHERE session_id = ?", (sid,)).fetchone()[
                        0
                    ],
                    "keys": db.execute(
                        "SELECT count(*) FROM bridge_keys WHERE session_id = ? OR key LIKE ? OR value LIKE ?",
                        (sid, f"%{sid}%", f"%{sid}%"),
                    ).fetchone()[0],
                }

        return SQLiteStorage(path), count_sqlite
    import psycopg

    from pocketping import PostgresStorage

    dsn = services.fresh_database()

    def count_pg(sid: str) -> dict[str, int]:
        with psycopg.connect(dsn) as db:
            return {
                "sessions": db.execute("SELECT count(*) FROM pocketping_sessions WHERE id = %s", (sid,)).fetchone()[0],  # type: ignore[index]
                "messages": db.execute(
                    "SELECT count(*) FROM pocketping_messages WHERE session_id = %s", (sid,)
                ).fetchone()[0],  # type: ignore[index]
                "outbox": db.execute(
                    "SELECT count(*) FROM pocketping_bridge_outbox WHERE session_id = %s", (sid,)
                ).fetchone()[0],  # type: ignore[index]
                "keys": db.execute(
                    "SELECT count(*) FROM pocketping_bridge_keys WHERE session_id = %s OR key LIKE %s OR value LIKE %s",
                    (sid, f"%{sid}%", f"%{sid}%"),
                ).fetchone()[0],  # type: ignore[index]
            }

    return PostgresStorage(dsn), count_pg


NOTHING = {"sessions": 0, "messages": 0, "outbox": 0, "keys": 0}


async def _upload_flow(http: httpx.AsyncClient, sid: str, seen: list[str], statuses: list[int]) -> None:
    """The widget's three upload steps, then a download of the result."""
    r = await http.post("/upload", json={"sessionId": sid, "filename": "a.png", "mimeType": "image/png", "size": 108})
    statuses.append(r.status_code)
    if r.status_code != 200:
        return
    ticket = r.json()
    seen.append(ticket["attachmentId"])
    r = await http.put(ticket["uploadUrl"], content=PNG, headers={"Content-Type": "image/png"})
    statuses.append(r.status_code)
    r = await http.post("/upload/complete", json={"sessionId": sid, "attachmentId": ticket["attachmentId"]})
    statuses.append(r.status_code)
    try:
        r = await http.get(f"/attachments/{ticket['attachmentId']}")
    except httpx.RemoteProtocolError:  # erased while its bytes were being sent: cut off
        statuses.append(CUT)
        return
    statuses.append(r.status_code)


async def _race(base: str, sid: str, erase: Callable[[], Any], *, uploaders: int, senders: int) -> dict[str, Any]:
    """Visitors' uploads and messages in a loop, the erasure 0.4 s in; the loops run on for
    0.6 s after it returns. Bounded: at most 40 rounds per worker."""
    statuses: list[int] = []
    attachments: list[str] = []
    erased = asyncio.Event()
    finished_at: list[float] = []

    async def uploader(http: httpx.AsyncClient) -> None:
        for _ in range(40):
            if finished_at and time.monotonic() > finished_at[0] + 0.6:
                return
            await _upload_flow(http, sid, attachments, statuses)

    async def sender(http: httpx.AsyncClient, n: int) -> None:
        for i in range(40):
            if finished_at and time.monotonic() > finished_at[0] + 0.6:
                return
            r = await http.post("/message", json={"sessionId": sid, "content": f"racing message {n}-{i}"})
            statuses.append(r.status_code)

    async def eraser() -> None:
        await asyncio.sleep(0.4)
        await asyncio.to_thread(erase)
        finished_at.append(time.monotonic())
        erased.set()

    limits = httpx.Limits(max_connections=uploaders + senders + 2)
    async with httpx.AsyncClient(base_url=base, timeout=20, headers=HEADERS, limits=limits) as http:
        await asyncio.wait_for(
            asyncio.gather(
                eraser(), *(uploader(http) for _ in range(uploaders)), *(sender(http, n) for n in range(senders))
            ),
            timeout=90,
        )
        # After the erasure, nothing of the visitor's can be reached or finished.
        late = []
        for attachment in attachments:
            late.append((await http.get(f"/attachments/{attachment}")).status_code)
            late.append((await http.put(f"/upload/{attachment}", content=PNG)).status_code)
            done = await http.post("/upload/complete", json={"sessionId": sid, "attachmentId": attachment})
            late.append(done.status_code)
    return {"statuses": statuses, "attachments": attachments, "late": late}


@pytest.mark.parametrize("erasure", ["forget", "purge"])
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_erasure_wins_races_with_uploads_messages_and_deliveries(
    kind: str, erasure: str, tg: FakeTelegram, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    storage, rows_about = _storage(kind, tmp_path)
    pp = make_pp(tg, storage, tmp_path, rate_limits=None)
    base = serve(pp)
    visitor = Visitor(base, identity={"id": "u-9", "email": "erase-me@example.com"})
    sid = visitor.session_id
    visitor_id = pp.sync.get_session(sid).visitor_id
    eventually(lambda: key(pp, f"telegram:thread:{sid}"))
    tg.latency = 0.3  # every platform call is slow: deliveries are in flight during the erasure

    def erase() -> Any:
        if erasure == "forget":
            return pp.sync.forget(visitor_id)
        return pp.sync.purge(datetime.now(UTC) + timedelta(hours=1))

    try:
        result = asyncio.run(_race(base, sid, erase, uploaders=3, senders=4))
        assert result["attachments"], "no upload started before the erasure"
        assert set(result["statuses"]) <= RACING, sorted(set(result["statuses"]))
        assert 200 in result["statuses"] and 404 in result["statuses"]
        assert set(result["late"]) <= {400, 404}, result["late"]
        # Work in flight settles (platform calls take 0.3 s), then nothing about it is left.
        tg.latency = 0.0
        time.sleep(1.0)
        assert pp.sync.run(pp.bridge_hub.drain(10)) if pp.bridge_hub else True
        assert rows_about(sid) == NOTHING
        left = [p.name for p in (tmp_path / "uploads").glob("att_*")]
        assert left == [], left
        assert pp.sync.run(pp.files.delete_sessions([sid])) == 0
        with pytest.raises(SessionNotFound):
            pp.sync.get_session(sid)
        r = visitor.http.post("/message", json={"sessionId": sid, "content": "back?"})
        assert r.status_code == 404
    finally:
        visitor.close()


def test_uploads_started_while_forget_runs_are_erased_too(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    """The window between the erasure's first file pass and its rows: a slow database makes
    it wide, and every upload started inside it is still erased and unreachable."""

    class SlowErasure(SQLiteStorage):
        async def delete_sessions(self, session_ids: Any) -> int:
            await asyncio.sleep(0.5)  # a busy database: the rows go half a second after the files
            return await super().delete_sessions(session_ids)

    pp = PocketPing(storage=SlowErasure(tmp_path / "pp.db"), files=LocalFileStore(tmp_path / "up"), rate_limits=None)
    base = serve(pp)
    http = httpx.Client(base_url=base, timeout=10, headers=HEADERS)
    sid = http.post("/connect", json={"visitorId": "v-up", "sessionId": None}).json()["sessionId"]

    async def during_forget() -> dict[str, Any]:
        statuses: list[int] = []
        seen: list[str] = []
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=HEADERS) as client:
            forget = asyncio.create_task(asyncio.to_thread(pp.sync.forget, "v-up"))
            await asyncio.sleep(0.15)  # the files are gone, the rows not yet
            await asyncio.gather(*(_upload_flow(client, sid, seen, statuses) for _ in range(5)))
            await forget
            late = [(await client.get(f"/attachments/{a}")).status_code for a in seen]
        return {"statuses": statuses, "seen": seen, "late": late}

    try:
        out = asyncio.run(during_forget())
        assert out["seen"], "no upload was started inside the window"
        assert out["late"] == [404] * len(out["seen"])
        assert [p.name for p in (tmp_path / "up").glob("att_*")] == []
    finally:
        http.close()


def test_a_delivery_in_flight_during_forget_posts_and_keeps_nothing(
    tg: FakeTelegram, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    """A thread being opened (1 s platform latency) when the visitor is forgotten: no header
    with the page URL is posted afterwards, and no key is written for the erased session."""
    storage, rows_about = _storage("sqlite", tmp_path)
    pp = make_pp(tg, storage, tmp_path)
    base = serve(pp)
    tg.latency = 1.0
    visitor = Visitor(base)
    sid = visitor.session_id
    try:
        visitor.say("hello, is anyone there?")
        time.sleep(0.3)  # createForumTopic is in flight
        pp.sync.forget(pp.sync.get_session(sid).visitor_id)
        time.sleep(2.5)  # what was in flight has come back
        tg.latency = 0.0
        assert pp.sync.run(pp.bridge_hub.drain(10)) if pp.bridge_hub else True
        assert rows_about(sid) == NOTHING
        texts = [body.get("text", "") for body in tg.sent("sendMessage", ok_only=False)]
        assert not [t for t in texts if sid in t or VISITOR_META["url"] in t or "anyone there" in t], texts
    finally:
        visitor.close()


def _session(sid: str) -> Session:
    now = datetime.now(UTC)
    return Session(id=sid, visitor_id="v-" + sid, created_at=now, last_activity=now)


def _message(sid: str) -> Message:
    return Message(
        id="msg_" + sid[-16:], session_id=sid, content="late", sender="visitor", created_at=datetime.now(UTC)
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_nothing_is_written_for_an_erased_session(kind: str, tmp_path: Path) -> None:
    """What a request or a delivery that lost the race writes afterwards: a message save is
    SessionNotFound (a 404, not a foreign-key 500), a bridge key is refused."""
    storage: Any = MemoryStorage() if kind == "memory" else _storage(kind, tmp_path)[0]

    async def scenario() -> None:
        await storage.open()
        try:
            kept, erased = _session("sess_keptkeptkeptkept"), _session("sess_gonegonegonegone")
            await storage.create_session(kept)
            await storage.create_session(erased)
            await storage.delete_sessions([erased.id])
            with pytest.raises(SessionNotFound):
                await storage.save_message(erased.id, _message(erased.id))
            assert await storage.get_messages(erased.id) == []
            assert await storage.bridge_key_set("t:thread:" + erased.id, "77", session_id=erased.id) is False
            assert await storage.bridge_key_get("t:thread:" + erased.id) is None
            assert await storage.bridge_key_set("t:thread:" + kept.id, "78", session_id=kept.id) is True
            assert await storage.bridge_key_get("t:thread:" + kept.id) == "78"
            assert await storage.bridge_key_set("t:seen:1", "1", only_new=True) is True  # keys of no session
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_erased_text_leaves_no_copy_in_the_sqlite_files(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    path = tmp_path / "pp.db"
    pp = PocketPing(storage=SQLiteStorage(path), files=LocalFileStore(tmp_path / "up"))
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10, headers=HEADERS) as http:
        identity = {"id": "u-1", "email": "wal-leak@example.com"}
        sid = http.post("/connect", json={"visitorId": "v-wal", "sessionId": None, "identity": identity}).json()[
            "sessionId"
        ]
        for i in range(5):
            sent = http.post("/message", json={"sessionId": sid, "content": f"my card is 4970-SECRET-{i}"})
            assert sent.status_code == 200
        other = http.post("/connect", json={"visitorId": "v-stays", "sessionId": None}).json()["sessionId"]
        assert http.post("/message", json={"sessionId": other, "content": "I stay KEPT-TEXT"}).status_code == 200
        pp.sync.forget("v-wal")
        # The server is still running, its connections open: what a copy of the files holds.
        files = [p for p in tmp_path.iterdir() if p.name.startswith("pp.db")]
        raw = b"".join(p.read_bytes() for p in files)
        assert b"4970-SECRET" not in raw and b"wal-leak@example.com" not in raw, [p.name for p in files]
        assert (tmp_path / "pp.db-wal").stat().st_size == 0
        # The other visitor's text is still there, and more can be written.
        assert http.post("/message", json={"sessionId": other, "content": "still here"}).status_code == 200
        assert [m.content for m in pp.sync.get_messages(other)] == ["I stay KEPT-TEXT", "still here"]


def test_hook_calls_still_waiting_are_dropped_by_forget(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    """An ``on_message`` hook that is slow: calls queued behind it for an erased visitor are
    not run with the erased text afterwards."""
    seen: list[str] = []
    running, release = threading.Event(), threading.Event()

    def slow_hook(session: Session, message: Message) -> None:
        running.set()
        release.wait(5)
        seen.append(message.content)

    pp = PocketPing(storage=SQLiteStorage(tmp_path / "pp.db"), on_message=slow_hook, rate_limits=None)
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10, headers=HEADERS) as http:
        sid = http.post("/connect", json={"visitorId": "v-hook", "sessionId": None}).json()["sessionId"]
        for i in range(6):
            assert http.post("/message", json={"sessionId": sid, "content": f"private {i}"}).status_code == 200
        assert running.wait(5)  # the first call is running, the other five wait behind it
        threading.Timer(0.5, release.set).start()
        pp.sync.forget("v-hook")
        assert pp.sync.run(pp.hooks.join(5))
    assert seen == ["private 0"]
