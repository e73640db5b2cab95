"""Export, erasure and retention on the Memory, SQLite and PostgreSQL storages: a visitor with
messages, an attachment on disk and a Telegram thread (fake Bot API on 127.0.0.1) is exported,
then forgotten everywhere, while another visitor keeps everything."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketping import (
    InvalidInput,
    MemoryStorage,
    PocketPing,
    Removed,
    SessionNotFound,
    SQLiteStorage,
    StorageCapabilityError,
)
from pocketping.bridges import TelegramBridge
from pocketping.files import LocalFileStore

from . import services
from .fakes.harness import Visitor, drained, eventually, fast, key
from .fakes.telegram import CHAT_ID, FakeTelegram
from .test_bridges_delivery import SeedStorage

SECRET = "s3cret-Token_1"
pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def _postgres(tmp: Path) -> Any:
    from pocketping import PostgresStorage

    return PostgresStorage(services.fresh_database())


STORAGES: dict[str, Callable[[Path], Any]] = {
    "memory": lambda tmp: MemoryStorage(),
    "sqlite": lambda tmp: SQLiteStorage(tmp / "pp.db"),
    "postgres": _postgres,
}


def make_pp(tg: FakeTelegram, storage: Any, tmp: Path, **kw: Any) -> PocketPing:
    bridge = fast(TelegramBridge(tg.token, CHAT_ID, webhook_secret=SECRET, api_base=tg.url))
    return PocketPing(storage=storage, files=LocalFileStore(tmp / "uploads"), bridges=[bridge], **kw)


def upload(v: Visitor) -> str:
    ticket = v.http.post(
        "/upload", json={"sessionId": v.session_id, "filename": "id.png", "mimeType": "image/png", "size": len(PNG)}
    ).json()
    assert httpx.put(ticket["uploadUrl"], content=PNG, headers={"Content-Type": "image/png"}).status_code == 200
    done = v.http.post("/upload/complete", json={"sessionId": v.session_id, "attachmentId": ticket["attachmentId"]})
    assert done.status_code == 200, done.text
    return str(ticket["attachmentId"])


def operator_reply(tg: FakeTelegram, base: str, thread: int, text: str) -> int:
    update = tg.operator_update(thread, text)
    r = httpx.post(
        f"{base}/webhooks/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=10
    )
    assert r.status_code == 200, r.text
    return int(update["message"]["message_id"])


@pytest.mark.parametrize("kind", list(STORAGES))
def test_export_then_forget_a_visitor_everywhere(
    kind: str, tg: FakeTelegram, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    pp = make_pp(tg, STORAGES[kind](tmp_path), tmp_path)
    base = serve(pp)
    gone = Visitor(base, identity={"id": "u-7", "email": "ada@example.com", "name": "Ada"})
    stays = Visitor(base)
    try:
        attachment = upload(gone)
        sent = gone.http.post(
            "/message", json={"sessionId": gone.session_id, "content": "my passport", "attachmentIds": [attachment]}
        )
        assert sent.status_code == 200
        said = gone.say("please delete me later")
        stays.say("I stay")
        eventually(lambda: key(pp, f"telegram:thread:{gone.session_id}") and key(pp, f"telegram:out:{said}"))
        thread = int(key(pp, f"telegram:thread:{gone.session_id}") or 0)
        platform_id = operator_reply(tg, base, thread, "Noted.")
        assert gone.next_operator_message()["content"] == "Noted."
        assert drained(pp)
        gone_visitor = pp.sync.get_session(gone.session_id).visitor_id
        files = sorted(p.name for p in (tmp_path / "uploads").iterdir())
        assert f"{attachment}.bin" in files and f"{attachment}.json" in files

        exported = pp.sync.export(gone_visitor)
        json.dumps(exported)  # JSON-serialisable as it is
        assert exported["visitorId"] == gone_visitor and len(exported["sessions"]) == 1
        session = exported["sessions"][0]
        assert session["id"] == gone.session_id
        assert session["identity"] == {"id": "u-7", "email": "ada@example.com", "name": "Ada"}
        assert session["metadata"]["url"] == "https://shop.example/pricing?plan=pro"
        contents = [m["content"] for m in session["messages"]]
        assert contents == ["my passport", "please delete me later", "Noted."]
        shared = session["messages"][0]["attachments"][0]
        assert shared["id"] == attachment and shared["filename"] == "id.png" and shared["size"] == len(PNG)
        assert shared["mime_type"] == "image/png"

        removed = pp.sync.forget(gone_visitor)
        assert isinstance(removed, Removed)
        assert removed.to_dict() == {"sessions": [gone.session_id], "messages": 3, "files": 1}

        # The API and the widget routes no longer know the session.
        with pytest.raises(SessionNotFound):
            pp.sync.get_session(gone.session_id)
        assert gone.http.get("/messages", params={"sessionId": gone.session_id}).status_code == 404
        r = gone.http.post("/message", json={"sessionId": gone.session_id, "content": "still here?"})
        assert r.status_code == 404 and r.json()["error"] == "session_not_found"
        # Files, bridge thread mappings and outbox rows are gone.
        assert not any(p.name.startswith(attachment) for p in (tmp_path / "uploads").iterdir())
        for name in (
            f"telegram:thread:{gone.session_id}",
            f"telegram:session:{thread}",
            f"telegram:out:{said}",
            f"telegram:in:{platform_id}",
            f"telegram:done:msg:{said}",
        ):
            assert key(pp, name) is None, name
        assert pp.sync.export(gone_visitor)["sessions"] == []
        assert pp.sync.forget(gone_visitor).to_dict() == {"sessions": [], "messages": 0, "files": 0}

        # The other visitor keeps everything.
        assert [m.content for m in pp.sync.get_messages(stays.session_id)] == ["I stay"]
        assert key(pp, f"telegram:thread:{stays.session_id}") is not None
        stays.say("and I can still chat")
        assert drained(pp)
    finally:
        gone.close()
        stays.close()


async def _age(pp: PocketPing, session_id: str, days: float) -> None:
    session = await pp.get_session(session_id)
    session.last_activity = datetime.now(UTC) - timedelta(days=days)
    await pp.storage.update_session(session)


@pytest.mark.parametrize("kind", list(STORAGES))
async def test_purge_removes_idle_sessions_only(kind: str, tmp_path: Path) -> None:
    pp = PocketPing(storage=STORAGES[kind](tmp_path), files=LocalFileStore(tmp_path / "uploads"), rate_limits=None)
    async with pp.lifespan():
        old = [(await pp.chat.connect(f"old-{i}")).session.id for i in range(3)]
        for sid in old:
            await pp.chat.visitor_message(sid, "hello")
        await asyncio.sleep(0.01)
        cutoff = datetime.now(UTC)
        await asyncio.sleep(0.01)
        new = (await pp.chat.connect("new")).session.id
        await pp.chat.visitor_message(new, "hello")
        removed = await pp.purge(before=cutoff)
        assert sorted(removed.sessions) == sorted(old) and removed.messages == 3
        for sid in old:
            with pytest.raises(SessionNotFound):
                await pp.get_session(sid)
        assert [m.content for m in await pp.get_messages(new)] == ["hello"]
        assert (await pp.purge(before=cutoff.isoformat())).sessions == []
        with pytest.raises(InvalidInput, match="before"):
            await pp.purge(before="last tuesday")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_retention_days_purges_on_a_schedule(kind: str, tmp_path: Path) -> None:
    pp = PocketPing(storage=STORAGES[kind](tmp_path), retention_days=30, retention_interval=0.2, rate_limits=None)
    sid = pp.sync.run(pp.chat.connect("idle")).session.id
    fresh = pp.sync.run(pp.chat.connect("fresh")).session.id
    pp.sync.run(_age(pp, sid, 31))
    try:
        deadline = time.monotonic() + 10
        while pp.sync.run(pp.chat.find_session(sid)) is not None:
            assert time.monotonic() < deadline, "the idle session was not purged"
            time.sleep(0.05)
        assert pp.sync.get_session(fresh).id == fresh
    finally:
        pp.sync.stop()


async def test_a_storage_without_the_methods_gets_an_error_naming_them() -> None:
    pp = PocketPing(storage=SeedStorage())
    with pytest.raises(StorageCapabilityError) as refused:
        await pp.forget("v1")
    assert refused.value.methods == ["find_sessions_by_visitor", "delete_sessions"]
    assert "find_sessions_by_visitor(), delete_sessions()" in str(refused.value)
    with pytest.raises(StorageCapabilityError, match=r"list_inactive_sessions\(\), delete_sessions\(\)"):
        await pp.purge(before=datetime.now(UTC))
    with pytest.raises(StorageCapabilityError, match=r"find_sessions_by_visitor\(\)"):
        await pp.export("v1")
    with pytest.raises(StorageCapabilityError, match="retention_days"):
        PocketPing(storage=SeedStorage(), retention_days=30)
    with pytest.raises(InvalidInput, match="retention_days"):
        PocketPing(storage=MemoryStorage(), retention_days=0)


async def test_a_file_store_without_delete_sessions_is_named() -> None:
    class Files(LocalFileStore):
        delete_sessions = None  # type: ignore[assignment]

    pp = PocketPing(storage=MemoryStorage(), files=Files("unused"))
    with pytest.raises(StorageCapabilityError, match=r"Files has no delete_sessions\(\)"):
        await pp.forget("v1")


def test_sqlite_bridge_keys_written_before_the_upgrade_are_erased_too(tmp_path: Path) -> None:
    """A database from before bridge keys knew their session: the upgrade finds it in the key
    or the value, so forget() erases those rows as well."""
    path = tmp_path / "old.db"
    storage = SQLiteStorage(path)

    async def setup() -> tuple[str, str, str]:
        await storage.open()
        pp = PocketPing(storage=storage, rate_limits=None)
        session = (await pp.chat.connect("old-visitor")).session
        message = await pp.chat.visitor_message(session.id, "hi")
        other = (await pp.chat.connect("other-visitor")).session
        await storage.close()
        return session.id, message.id, other.id

    sid, mid, other = asyncio.run(setup())
    db = sqlite3.connect(path)
    db.executescript(
        "DROP INDEX bridge_keys_by_session; ALTER TABLE bridge_keys DROP COLUMN session_id;"
        "UPDATE pocketping_schema SET version = 2;"
    )
    legacy = {
        f"telegram:thread:{sid}": "1000",
        "telegram:session:1000": sid,
        f"telegram:done:header:{sid}": "7",
        f"telegram:out:{mid}": "1000 8",
        f"telegram:done:msg:{mid}": "8",
        "telegram:in:9": f"{sid} msg_0123456789abcdef",
        f"telegram:thread:{other}": "2000",
        "telegram:seen:12345": "1",
    }
    db.executemany("INSERT INTO bridge_keys (key, value) VALUES (?, ?)", legacy.items())
    db.commit()
    db.close()

    async def upgrade_and_forget() -> tuple[Removed, dict[str, str]]:
        pp = PocketPing(storage=SQLiteStorage(path), rate_limits=None, files=LocalFileStore(tmp_path / "up"))
        async with pp.lifespan():
            removed = await pp.forget("old-visitor")
        left = sqlite3.connect(path)
        try:
            return removed, dict(left.execute("SELECT key, value FROM bridge_keys").fetchall())
        finally:
            left.close()

    removed, left = asyncio.run(upgrade_and_forget())
    assert removed.sessions == [sid] and removed.messages == 1
    assert left == {f"telegram:thread:{other}": "2000", "telegram:seen:12345": "1"}


def test_postgres_bridge_keys_written_before_the_upgrade_are_erased_too(tmp_path: Path) -> None:
    import psycopg

    from pocketping import PostgresStorage

    dsn = services.fresh_database()

    async def setup() -> tuple[str, str, str]:
        pp = PocketPing(storage=PostgresStorage(dsn), rate_limits=None)
        async with pp.lifespan():
            session = (await pp.chat.connect("old-visitor")).session
            message = await pp.chat.visitor_message(session.id, "hi")
            other = (await pp.chat.connect("other-visitor")).session
        return session.id, message.id, other.id

    sid, mid, other = asyncio.run(setup())
    legacy = {
        f"telegram:thread:{sid}": "1000",
        "telegram:session:1000": sid,
        f"telegram:out:{mid}": "1000 8",
        f"telegram:done:msg:{mid}": "8",
        "telegram:in:9": f"{sid} msg_0123456789abcdef",
        f"telegram:thread:{other}": "2000",
        "telegram:seen:12345": "1",
    }
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("ALTER TABLE pocketping_bridge_keys DROP COLUMN session_id")
        db.execute("UPDATE pocketping_schema SET version = 2")
        with db.cursor() as cur:
            cur.executemany("INSERT INTO pocketping_bridge_keys (key, value) VALUES (%s, %s)", list(legacy.items()))

    async def upgrade_and_forget() -> Removed:
        pp = PocketPing(storage=PostgresStorage(dsn), rate_limits=None, files=LocalFileStore(tmp_path / "up"))
        async with pp.lifespan():
            return await pp.forget("old-visitor")

    removed = asyncio.run(upgrade_and_forget())
    assert removed.sessions == [sid] and removed.messages == 1
    with psycopg.connect(dsn) as db:
        left = dict(db.execute("SELECT key, value FROM pocketping_bridge_keys").fetchall())
    assert left == {f"telegram:thread:{other}": "2000", "telegram:seen:12345": "1"}
