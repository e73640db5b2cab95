"""PostgresStorage and the brokers beyond the shared conformance suite (tests/test_storage.py):
schema migration with several workers starting at once, stamps unique and in commit order
across processes, the install hint when the extras are missing, and a broker that is down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from pocketping import MemoryStorage, PocketPing, PostgresStorage, RedisBroker, StorageError
from pocketping.models import Session
from pocketping.storage.postgres import MIGRATIONS

from . import services
from .services import ROOT, RedisServer, free_port

pytestmark = pytest.mark.anyio


async def test_several_workers_create_the_schema_at_once() -> None:
    dsn = services.fresh_database()
    storages = [PostgresStorage(dsn, min_size=1, max_size=2) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in storages))
    try:
        pg = services.shared_postgres()
        db = dsn.rsplit("/", 1)[1]
        assert pg.execute("SELECT version FROM pocketping_schema", dbname=db) == [(len(MIGRATIONS),)]
        indexes = {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes", dbname=db)}
        assert {
            "pocketping_sessions_by_activity",
            "pocketping_sessions_by_visitor",
            "pocketping_messages_by_created",
            "pocketping_messages_by_change",
        } <= indexes
        plan = "\n".join(
            r[0]
            for r in pg.execute(
                "EXPLAIN SELECT * FROM pocketping_messages WHERE session_id = 'x' AND updated_ms > 5 "
                "ORDER BY updated_ms LIMIT 50",
                dbname=db,
            )
        )
        assert "pocketping_messages_by_change" in plan, plan
    finally:
        await asyncio.gather(*(s.close() for s in storages))


async def test_a_newer_schema_is_refused() -> None:
    dsn = services.fresh_database()
    storage = PostgresStorage(dsn)
    await storage.open()
    await storage.close()
    services.shared_postgres().execute("UPDATE pocketping_schema SET version = 999", dbname=dsn.rsplit("/", 1)[1])
    with pytest.raises(StorageError, match="newer"):
        await PostgresStorage(dsn).open()


def test_stamps_are_unique_and_in_commit_order_across_processes() -> None:
    """Two writer processes race on one session while a reader pages with the ``after``
    cursor, as a reconnecting widget does: it must see every message exactly once."""
    dsn = services.fresh_database()

    async def run() -> tuple[list[str], list[str]]:
        storage = PostgresStorage(dsn)
        await storage.open()
        try:
            now = datetime.now(UTC)
            await storage.create_session(Session("sess_race", "v", now, now))
            writers = [
                subprocess.Popen(
                    [sys.executable, "-m", "tests.apps.stamp_writer", dsn, "sess_race", "150", tag], cwd=ROOT
                )
                for tag in ("a", "b")
            ]
            try:
                seen: list[str] = []
                cursor = None
                deadline = time.monotonic() + 60
                while len(seen) < 300 and time.monotonic() < deadline:
                    page = await storage.get_messages("sess_race", after=cursor, limit=7)
                    if page:
                        seen += [m.id for m in page]
                        cursor = page[-1].cursor
                    else:
                        await asyncio.sleep(0.005)
                for w in writers:
                    assert w.wait(30) == 0
            finally:
                for w in writers:
                    services.stop_pid(w)  # type: ignore[arg-type]
            stored = await storage.get_messages("sess_race")
            return seen, [m.id for m in stored]
        finally:
            await storage.close()

    seen, stored = asyncio.run(run())
    assert len(stored) == 300
    assert len(seen) == len(set(seen)) == 300, "the cursor reader missed or repeated messages"
    assert set(seen) == set(stored)


def test_import_works_without_the_extras_and_construction_names_the_install() -> None:
    code = (
        "import sys\n"
        "for name in ('psycopg', 'psycopg_pool', 'redis'): sys.modules[name] = None\n"
        "import pocketping\n"
        "from pocketping import PostgresStorage, PostgresBroker, RedisBroker\n"
        "for make in (lambda: PostgresStorage('postgresql:///x'), lambda: PostgresBroker('postgresql:///x'),\n"
        "             lambda: RedisBroker('redis://127.0.0.1')):\n"
        "    try:\n"
        "        make()\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert "pip install 'pocketping[postgres]'" in lines[0] and "pip install 'pocketping[postgres]'" in lines[1]
    assert "pip install 'pocketping[redis]'" in lines[2]


async def test_a_broker_that_is_down_never_fails_send_message_and_connects_later() -> None:
    port = free_port()
    broker = RedisBroker(f"redis://127.0.0.1:{port}/0")
    pp = PocketPing(storage=MemoryStorage(), broker=broker)
    started = time.monotonic()
    await asyncio.wait_for(pp.start(), 15)  # waits up to 5 s for the broker, then goes on
    assert time.monotonic() - started < 10 and not broker.connected
    session, _, _ = await pp.chat.connect("v", None, {}, None)
    sent = await asyncio.wait_for(pp.send_message(session.id, content="while the broker is down"), 5)
    assert [m.id for m in await pp.get_messages(session.id)] == [sent.id]
    server = RedisServer()
    server.port = port
    server.start()
    try:
        deadline = time.monotonic() + 15
        while not broker.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert broker.connected, "the broker connected once redis came up"
        await pp.send_message(session.id, content="after")
    finally:
        await pp.stop()
        server.stop()
