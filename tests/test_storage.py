"""One conformance suite, run against every built-in storage and against seed-style user
storages (plain sync methods returning dict rows, and an async one), through PocketPing."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pocketping import (
    MemoryStorage,
    Message,
    PocketPing,
    SessionNotFound,
    SQLiteStorage,
    StorageCapabilityError,
)
from pocketping.models import iso, parse_time

pytestmark = pytest.mark.anyio


class SeedStyleStorage:
    """Written like the seed documentation's PostgresStorage: four plain methods, dict rows,
    keys id / visitor_id / created_at / content / type. Backed by a real SQLite file."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        with self.lock:
            self.conn.executescript(
                "CREATE TABLE sessions (id TEXT PRIMARY KEY, visitor_id TEXT, created_at TEXT);"
                "CREATE TABLE messages (id TEXT PRIMARY KEY, session_id TEXT, content TEXT, type TEXT,"
                " created_at TEXT);"
            )

    def create_session(self, session: Any) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT INTO sessions (id, visitor_id, created_at) VALUES (?, ?, ?)",
                [session["id"], session["visitor_id"], session["created_at"].isoformat()],
            )

    def get_session(self, id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT * FROM sessions WHERE id = ?", [id]).fetchone()
        return dict(row) if row else None

    def save_message(self, session_id: str, message: Any) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT INTO messages (id, session_id, content, type, created_at) VALUES (?, ?, ?, ?, ?)",
                [message["id"], session_id, message["content"], message["type"], message["created_at"].isoformat()],
            )

    def get_messages(self, session_id: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT * FROM messages WHERE session_id = ? ORDER BY created_at", [session_id]
            ).fetchall()
        return [dict(r) for r in rows]


class AsyncDictStorage:
    """A fuller user storage: async methods, dicts, with the optional capabilities."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}

    async def create_session(self, session: Any) -> None:
        self.sessions[session["id"]] = session.to_dict()
        self.messages[session["id"]] = {}

    async def get_session(self, id: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        return dict(self.sessions[id]) if id in self.sessions else None

    async def update_session(self, session: Any) -> None:
        self.sessions[session.id] = session.to_dict()

    async def list_sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        return list(self.sessions.values())

    async def find_session_by_visitor(self, visitor_id: str) -> dict[str, Any] | None:
        found = [s for s in self.sessions.values() if s["visitor_id"] == visitor_id]
        return max(found, key=lambda s: s["created_at"]) if found else None

    async def save_message(self, session_id: str, message: Any) -> None:
        self.messages[session_id][message["id"]] = message.to_dict()

    async def update_message(self, session_id: str, message: Any) -> None:
        self.messages[session_id][message.id] = message.to_dict()

    async def get_messages(self, session_id: str) -> list[dict[str, Any]]:
        return sorted(self.messages.get(session_id, {}).values(), key=lambda m: m["created_at"])


def _sqlite(tmp: Path) -> Any:
    return SQLiteStorage(tmp / "pp.db")


def _postgres(tmp: Path) -> Any:
    from pocketping import PostgresStorage

    from . import services

    return PostgresStorage(services.fresh_database())  # a new database in a real cluster


STORAGES: dict[str, Callable[[Path], Any]] = {
    "memory": lambda tmp: MemoryStorage(),
    "sqlite": _sqlite,
    "postgres": _postgres,
    "seed-style": lambda tmp: SeedStyleStorage(str(tmp / "seed.db")),
    "async-dicts": lambda tmp: AsyncDictStorage(),
}
FULL = {"memory", "sqlite", "postgres", "async-dicts"}


@pytest.fixture(params=list(STORAGES))
async def kind_pp(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, PocketPing]]:
    pp = PocketPing(storage=STORAGES[request.param](tmp_path))
    async with pp.lifespan():
        yield request.param, pp


async def test_session_create_and_resume(kind_pp: tuple[str, PocketPing]) -> None:
    kind, pp = kind_pp
    session, created, history = await pp.chat.connect("visitor-1", None, {"url": "https://a/"}, None)
    assert created and history == []
    got = await pp.get_session(session.id)
    assert got.id == session.id and got.visitor_id == "visitor-1"
    assert got["visitor_id"] == "visitor-1" and got["id"] == session.id
    again, created, _ = await pp.chat.connect("visitor-1", session.id, {"url": "https://a/b"}, None)
    assert again.id == session.id and not created
    if kind in FULL:
        assert (await pp.get_session(session.id)).metadata["url"] == "https://a/b"
        lost, created, _ = await pp.chat.connect("visitor-1", None, {}, None)
        assert lost.id == session.id and not created


async def test_unknown_session_raises_named_error(kind_pp: tuple[str, PocketPing]) -> None:
    _, pp = kind_pp
    for call in (
        pp.get_session("sess_missing"),
        pp.get_messages("sess_missing"),
        pp.send_message("sess_missing", content="hi"),
        pp.emit_event("sess_missing", "x"),
        pp.close_session("sess_missing"),
    ):
        with pytest.raises(SessionNotFound) as info:
            await call
        assert "sess_missing" in str(info.value)


async def test_messages_round_trip_in_order(kind_pp: tuple[str, PocketPing]) -> None:
    _, pp = kind_pp
    session, _, _ = await pp.chat.connect("v", None, {}, None)
    sent: list[Message] = [await pp.chat.visitor_message(session.id, "question", [], None)]
    for i in range(20):
        sent.append(await pp.send_message(session.id, content=f"answer {i}", type="operator"))
    sent.append(await pp.send_message(session.id, content="bot", type="ai"))
    got = await pp.get_messages(session.id)
    assert [m.id for m in got] == [m.id for m in sent]
    assert [m.type for m in got] == ["visitor"] + ["operator"] * 20 + ["ai"]
    assert [m["content"] for m in got][:2] == ["question", "answer 0"]
    stamps = [m.created_at for m in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "stamps unique and increasing"
    assert all(s.microsecond % 1000 == 0 and s.tzinfo is not None for s in stamps)


async def test_paging_with_after_and_limit(kind_pp: tuple[str, PocketPing]) -> None:
    _, pp = kind_pp
    session, _, _ = await pp.chat.connect("v", None, {}, None)
    ids = [(await pp.send_message(session.id, content=f"m{i}")).id for i in range(10)]
    first = await pp.get_messages(session.id, limit=4)
    assert [m.id for m in first] == ids[:4]
    page = await pp.get_messages(session.id, after=first[-1].updated_at, limit=4)
    assert [m.id for m in page] == ids[4:8]
    rest = await pp.get_messages(session.id, after=iso(page[-1].cursor))
    assert [m.id for m in rest] == ids[8:]
    assert await pp.get_messages(session.id, after=rest[-1].cursor) == []


async def test_concurrent_writes_keep_unique_stamps(kind_pp: tuple[str, PocketPing]) -> None:
    _, pp = kind_pp
    session, _, _ = await pp.chat.connect("v", None, {}, None)
    await asyncio.gather(*(pp.send_message(session.id, content=f"c{i}") for i in range(40)))
    got = await pp.get_messages(session.id)
    assert len(got) == 40
    assert len({m.cursor for m in got}) == 40


async def test_edits_deletes_and_reads_move_the_cursor(kind_pp: tuple[str, PocketPing]) -> None:
    kind, pp = kind_pp
    session, _, _ = await pp.chat.connect("v", None, {}, None)
    a = await pp.send_message(session.id, content="a")
    b = await pp.send_message(session.id, content="b")
    if kind not in FULL:
        with pytest.raises(StorageCapabilityError, match="update_message"):
            await pp.edit_message(session.id, a.id, "a2")
        return
    edited = await pp.edit_message(session.id, a.id, "a2")
    assert edited.edited_at is not None and edited.cursor > b.cursor
    assert [m.id for m in await pp.get_messages(session.id, after=b.cursor)] == [a.id]
    deleted = await pp.delete_message(session.id, b.id)
    assert deleted.deleted_at is not None and deleted.to_wire()["content"] == ""
    read = await pp.mark_read(session.id, [a.id])
    assert read[0].status == "read" and read[0].read_at == read[0].cursor
    after = await pp.get_messages(session.id, after=edited.cursor)
    assert [m.id for m in after] == [b.id, a.id]
    stored = {m.id: m for m in await pp.get_messages(session.id)}
    assert stored[a.id].content == "a2" and stored[a.id].status == "read"
    assert stored[b.id].deleted_at == deleted.deleted_at


async def test_list_and_close_sessions(kind_pp: tuple[str, PocketPing]) -> None:
    kind, pp = kind_pp
    one, _, _ = await pp.chat.connect("v1", None, {}, None)
    two, _, _ = await pp.chat.connect("v2", None, {}, None)
    if kind not in FULL:
        with pytest.raises(StorageCapabilityError, match="list_sessions"):
            await pp.get_sessions()
        with pytest.raises(StorageCapabilityError, match="update_session"):
            await pp.close_session(one.id)
        return
    await asyncio.sleep(0.005)
    await pp.send_message(one.id, content="latest activity")
    assert [s.id for s in await pp.get_sessions()][:2] == [one.id, two.id]
    assert len(await pp.get_sessions(limit=1)) == 1
    closed = await pp.close_session(one.id)
    assert closed.status == "closed" and closed.closed_at is not None
    assert [s.id for s in await pp.get_sessions()] == [two.id]
    assert {s.id for s in await pp.get_sessions(include_closed=True)} == {one.id, two.id}
    await pp.chat.visitor_message(one.id, "I'm back", [], None)
    assert (await pp.get_session(one.id)).status == "active"


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "keep.db"
    pp = PocketPing(storage=SQLiteStorage(path))
    async with pp.lifespan():
        session, _, _ = await pp.chat.connect("v", None, {"url": "u"}, {"id": "user_1"})
        m = await pp.send_message(session.id, content="kept")
        await pp.edit_message(session.id, m.id, "kept (edited)")
    pp2 = PocketPing(storage=SQLiteStorage(path))
    async with pp2.lifespan():
        got = await pp2.get_messages(session.id)
        assert [x.content for x in got] == ["kept (edited)"]
        assert (await pp2.get_session(session.id)).identity == {"id": "user_1"}
        # the clock continues after the stored stamps
        later = await pp2.send_message(session.id, content="after restart")
        assert later.cursor > got[0].cursor
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM pocketping_schema").fetchone()[0] >= 1


async def test_sqlite_stamps_ahead_of_a_skewed_clock(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "s.db")
    pp = PocketPing(storage=storage)
    async with pp.lifespan():
        session, _, _ = await pp.chat.connect("v", None, {}, None)
        future = datetime.now(UTC) + timedelta(minutes=5)
        m1 = Message("msg_a", session.id, "x", "operator", future)
        await storage.save_message(session.id, m1)
        m2 = await pp.send_message(session.id, content="now")
        assert m2.cursor > parse_time(iso(future))


def test_a_storage_missing_a_required_method_is_named() -> None:
    class Half:
        def create_session(self, session: Any) -> None: ...
        def get_session(self, id: str) -> None: ...

    with pytest.raises(TypeError, match=r"save_message\(\), get_messages\(\)"):
        PocketPing(storage=Half())


async def test_sqlite_two_writers_on_one_file_keep_stamps_unique(tmp_path: Path) -> None:
    """Two storages on one file (as two worker processes would be) writing to one session."""
    path = tmp_path / "shared.db"
    a, b = PocketPing(storage=SQLiteStorage(path)), PocketPing(storage=SQLiteStorage(path))
    async with a.lifespan(), b.lifespan():
        session, _, _ = await a.chat.connect("v", None, {}, None)
        await asyncio.gather(
            *(pp.send_message(session.id, content=f"{name}{i}") for i in range(30) for name, pp in (("a", a), ("b", b)))
        )
        got = await b.get_messages(session.id)
        assert len(got) == 60
        assert len({m.cursor for m in got}) == 60
        assert [m.created_at for m in got] == sorted(m.created_at for m in got)


async def test_sqlite_a_failing_write_spoils_only_itself(tmp_path: Path) -> None:
    """Writes that arrive together share a transaction; one that fails is undone alone."""
    storage = SQLiteStorage(tmp_path / "batch.db")
    pp = PocketPing(storage=storage)
    async with pp.lifespan():
        session, _, _ = await pp.chat.connect("v", None, {}, None)
        duplicate = dataclasses.replace(session)
        results = await asyncio.gather(
            *(pp.send_message(session.id, content=f"m{i}") for i in range(20)),
            storage.create_session(duplicate),
            *(pp.send_message(session.id, content=f"n{i}") for i in range(20)),
            return_exceptions=True,
        )
        assert isinstance(results[20], sqlite3.IntegrityError)
        assert all(isinstance(r, Message) for r in results[:20] + results[21:])
    with sqlite3.connect(tmp_path / "batch.db") as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 40
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
