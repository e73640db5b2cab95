"""The durable outbox and the key-value map, on every built-in storage (memory, SQLite and a
real PostgreSQL cluster), and jobs due later across a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pocketping import MemoryStorage, PocketPing, PostgresStorage, SQLiteStorage
from pocketping.outbox import Destination
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


async def test_a_job_due_later_waits_and_holds_its_line(storage: BaseStorage) -> None:
    later = await storage.outbox_add("email", "s1", "email", "mail:1", {"n": 1}, due_ms=10_000)
    behind = await storage.outbox_add("email", "s1", "email", "mail:2", {"n": 2})
    other = await storage.outbox_add("email", "s2", "email", "mail:3", {"n": 3})
    assert [r["id"] for r in await storage.outbox_claim(now_ms=9_999, lease_ms=60_000, limit=10)] == [other]
    assert await storage.outbox_next_due() == 10_000
    assert [r["id"] for r in await storage.outbox_claim(now_ms=10_000, lease_ms=60_000, limit=10)] == [later]
    await storage.outbox_done(later)
    assert [r["id"] for r in await storage.outbox_claim(now_ms=10_001, lease_ms=60_000, limit=10)] == [behind]


class Recorder(Destination):
    """A destination of the test's own: records what the outbox hands it."""

    name = "recorder"

    def __init__(self) -> None:
        self.jobs: list[tuple[float, str]] = []

    async def deliver(self, job: dict[str, Any]) -> None:
        self.jobs.append((time.time(), job["key"]))


async def test_a_delayed_job_survives_a_restart(tmp_path: Path) -> None:
    def app() -> tuple[PocketPing, Recorder]:
        pp = PocketPing(storage=SQLiteStorage(tmp_path / "later.db"), rate_limits=None)
        recorder = Recorder()
        pp.outbox.add(recorder)
        return pp, recorder

    first, seen_first = app()
    await first.start()
    session = (await first.chat.connect("v-later")).session
    await first.outbox.enqueue("recorder", session.id, "mail", "mail:later", {}, delay=1.5)
    queued_at = time.time()
    await first.outbox.start()
    await asyncio.sleep(0.3)
    await first.stop()  # before it is due
    assert seen_first.jobs == []
    second, seen = app()
    await second.start()
    await second.outbox.start()
    try:
        deadline = time.monotonic() + 10
        while not seen.jobs:
            assert time.monotonic() < deadline, "the delayed job never ran"
            await asyncio.sleep(0.05)
        assert [key for _, key in seen.jobs] == ["mail:later"]
        assert seen.jobs[0][0] - queued_at >= 1.4
    finally:
        await second.stop()
