"""The bridges' durable outbox and key-value map, on every built-in storage (memory, SQLite and a
real PostgreSQL cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pocketping import MemoryStorage, PostgresStorage, SQLiteStorage
from pocketping.storage.base import BaseStorage

from . import services

pytestmark = pytest.mark.anyio


def _make(kind: str, tmp_path: Path) -> BaseStorage:
    if kind == "memory":
        return MemoryStorage()
    if kind == "sqlite":
        return SQLiteStorage(tmp_path / "q.db")
    return PostgresStorage(services.fresh_database())  # a new database in a real cluster


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseStorage]:
    s = _make(request.param, tmp_path)
    await s.open()
    yield s
    await s.close()


async def test_outbox_runs_each_line_in_order_and_lines_in_parallel(storage: BaseStorage) -> None:
    a1 = await storage.outbox_add("telegram", "s1", "message", "msg:1", {"message_id": "m1"})
    a2 = await storage.outbox_add("telegram", "s1", "message", "msg:2", {"message_id": "m2"})
    b1 = await storage.outbox_add("telegram", "s2", "message", "msg:3", {"message_id": "m3"})
    c1 = await storage.outbox_add("slack", "s1", "message", "msg:1", {"message_id": "m1"})
    claimed = await storage.outbox_claim(now_ms=1000, lease_ms=60_000, limit=10)
    assert [r["id"] for r in claimed] == [a1, b1, c1]
    assert claimed[0]["payload"] == {"message_id": "m1"} and claimed[0]["key"] == "msg:1"
    assert not any(r["reclaimed"] for r in claimed)
    # Claimed heads block their lines until done or retried.
    assert await storage.outbox_claim(now_ms=1001, lease_ms=60_000, limit=10) == []
    await storage.outbox_retry(a1, due_ms=5000, error="HTTP 500")
    assert await storage.outbox_next_due() == 5000  # only line heads count
    assert await storage.outbox_claim(now_ms=2000, lease_ms=60_000, limit=10) == []
    again = await storage.outbox_claim(now_ms=5000, lease_ms=60_000, limit=10)
    assert [(r["id"], r["attempts"]) for r in again] == [(a1, 1)]
    await storage.outbox_done(a1)
    nxt = await storage.outbox_claim(now_ms=5001, lease_ms=60_000, limit=10)
    assert [r["id"] for r in nxt] == [a2]


async def test_outbox_lease_expiry_reclaims_and_dead_rows_unblock_the_line(storage: BaseStorage) -> None:
    a1 = await storage.outbox_add("discord", "s1", "open", "open:s1", {})
    a2 = await storage.outbox_add("discord", "s1", "message", "msg:9", {"message_id": "m9"})
    assert [r["id"] for r in await storage.outbox_claim(now_ms=0, lease_ms=100, limit=5)] == [a1]
    taken = await storage.outbox_claim(now_ms=100, lease_ms=100, limit=5)
    assert [(r["id"], r["reclaimed"]) for r in taken] == [(a1, True)]
    await storage.outbox_retry(a1, due_ms=0, error="forbidden", dead=True)
    assert [r["id"] for r in await storage.outbox_claim(now_ms=200, lease_ms=100, limit=5)] == [a2]
    await storage.outbox_done(a2)
    assert await storage.outbox_next_due() is None


async def test_bridge_keys(storage: BaseStorage) -> None:
    assert await storage.bridge_key_get("telegram:thread:s1") is None
    assert await storage.bridge_key_set("telegram:thread:s1", "1000")
    assert await storage.bridge_key_get("telegram:thread:s1") == "1000"
    assert not await storage.bridge_key_set("telegram:thread:s1", "1001", only_new=True)
    assert await storage.bridge_key_get("telegram:thread:s1") == "1000"
    assert await storage.bridge_key_set("telegram:thread:s1", "1002")
    assert await storage.bridge_key_get("telegram:thread:s1") == "1002"
    await storage.bridge_key_delete("telegram:thread:s1")
    assert await storage.bridge_key_get("telegram:thread:s1") is None


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_outbox_survives_reopen(kind: str, tmp_path: Path) -> None:
    s = _make(kind, tmp_path)
    await s.open()
    item = await s.outbox_add("slack", "s1", "message", "msg:1", {"message_id": "m1"})
    await s.bridge_key_set("slack:thread:s1", "1700000000.000100")
    await s.close()
    s2 = PostgresStorage(s.dsn) if isinstance(s, PostgresStorage) else _make(kind, tmp_path)  # same db / file
    await s2.open()
    try:
        rows = await s2.outbox_claim(now_ms=10, lease_ms=1000, limit=5)
        assert [r["id"] for r in rows] == [item]
        assert await s2.bridge_key_get("slack:thread:s1") == "1700000000.000100"
    finally:
        await s2.close()
