"""The bridges on PostgresStorage, against a real PostgreSQL cluster: several workers (separate
connection pools, as separate processes have) claiming from one outbox at once, a database made
by an older PocketPing gaining the bridge tables, and a Telegram round trip whose retry survives
a restart. The storage-level contract is shared with memory and SQLite in test_bridges_queue.py."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from pocketping import PostgresStorage
from pocketping.storage.postgres import MIGRATIONS

from . import services
from .fakes.harness import Visitor, drained, key, stored
from .fakes.telegram import FakeTelegram
from .test_bridges_telegram import hook, make_pp, texts


async def _workers(dsn: str, n: int) -> list[PostgresStorage]:
    storages = [PostgresStorage(dsn, min_size=1, max_size=3) for _ in range(n)]
    await asyncio.gather(*(s.open() for s in storages))
    return storages


@pytest.mark.anyio
async def test_concurrent_workers_claim_each_job_once_and_keep_each_line_in_order() -> None:
    dsn = services.fresh_database()
    workers = await _workers(dsn, 4)
    try:
        lines = [("telegram", f"s{i}") for i in range(12)] + [("slack", f"s{i}") for i in range(4)]
        expected: dict[tuple[str, str], list[int]] = defaultdict(list)
        for n in range(6):  # adds of every line interleaved across the workers
            for i, (bridge, sid) in enumerate(lines):
                item = await workers[(i + n) % 4].outbox_add(bridge, sid, "message", f"msg:{n}", {"n": n})
                expected[(bridge, sid)].append(item)
        total = sum(len(v) for v in expected.values())

        claimed: dict[tuple[str, str], list[int]] = defaultdict(list)
        active: set[tuple[str, str]] = set()  # lines with a job in progress
        overlaps: list[tuple[str, str]] = []
        done = 0

        async def work(storage: PostgresStorage) -> None:
            nonlocal done
            while done < total:
                jobs = await storage.outbox_claim(now_ms=int(time.time() * 1000), lease_ms=60_000, limit=3)
                for job in jobs:
                    line = (job["bridge"], job["session_id"])
                    if line in active:
                        overlaps.append(line)
                    active.add(line)
                    claimed[line].append(job["id"])
                    assert not job["reclaimed"] and job["payload"] == {"n": len(claimed[line]) - 1}
                await asyncio.sleep(0.001)
                for job in jobs:
                    active.discard((job["bridge"], job["session_id"]))  # before the row goes
                    await storage.outbox_done(job["id"])
                    done += 1
                if not jobs:
                    await asyncio.sleep(0.002)

        await asyncio.wait_for(asyncio.gather(*(work(s) for s in workers)), 60)
        assert overlaps == [], "two jobs of one line ran at once"
        assert dict(claimed) == dict(expected)  # every job once, each line in id order
        assert await workers[0].outbox_next_due() is None
    finally:
        await asyncio.gather(*(s.close() for s in workers))


@pytest.mark.anyio
async def test_an_expired_lease_is_taken_over_by_exactly_one_worker() -> None:
    dsn = services.fresh_database()
    workers = await _workers(dsn, 5)
    try:
        ids = [await workers[0].outbox_add("discord", f"s{i}", "open", f"open:s{i}", {}) for i in range(20)]
        first = await workers[0].outbox_claim(now_ms=1_000, lease_ms=500, limit=50)
        assert sorted(r["id"] for r in first) == ids  # the first worker dies holding them all
        assert (
            await asyncio.gather(*(w.outbox_claim(now_ms=1_499, lease_ms=500, limit=50) for w in workers)) == [[]] * 5
        )
        taken = await asyncio.gather(*(w.outbox_claim(now_ms=1_500, lease_ms=500, limit=50) for w in workers))
        got = [r["id"] for rows in taken for r in rows]
        assert sorted(got) == ids, "each expired job is taken over once"
        assert all(r["reclaimed"] for rows in taken for r in rows)
    finally:
        await asyncio.gather(*(s.close() for s in workers))


@pytest.mark.anyio
async def test_a_call_added_while_an_earlier_add_of_its_line_is_uncommitted_waits_its_turn() -> None:
    """A trigger holds one add open (its id taken, not yet committed) while another process adds
    to the same line and a worker claims: the worker must not run the later call first."""
    dsn = services.fresh_database()
    workers = await _workers(dsn, 3)
    pg, db = services.shared_postgres(), dsn.rsplit("/", 1)[1]
    pg.execute(
        "CREATE FUNCTION slow_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.key = 'slow' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$",
        dbname=db,
    )
    pg.execute(
        "CREATE TRIGGER slow_add AFTER INSERT ON pocketping_bridge_outbox FOR EACH ROW EXECUTE FUNCTION slow_add()",
        dbname=db,
    )
    try:
        slow = asyncio.create_task(workers[0].outbox_add("telegram", "s1", "message", "slow", {}))
        deadline = time.monotonic() + 10
        while not pg.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'", dbname=db):
            assert time.monotonic() < deadline, "the slow add never started"
            await asyncio.sleep(0.01)
        fast = asyncio.create_task(workers[1].outbox_add("telegram", "s1", "message", "fast", {}))
        other = await workers[1].outbox_add("telegram", "s2", "message", "other line", {})
        await asyncio.sleep(0.2)
        early = await workers[2].outbox_claim(now_ms=int(time.time() * 1000), lease_ms=60_000, limit=10)
        assert [r["key"] for r in early] == ["other line"], "the later call of s1 ran before the earlier one"
        slow_id, fast_id = await asyncio.wait_for(asyncio.gather(slow, fast), 10)
        assert slow_id < fast_id and other not in (slow_id, fast_id)
        await workers[2].outbox_done(other)
        order = []
        for _ in range(2):
            jobs = await workers[2].outbox_claim(now_ms=int(time.time() * 1000), lease_ms=60_000, limit=10)
            order += [r["key"] for r in jobs]
            for r in jobs:
                await workers[2].outbox_done(r["id"])
        assert order == ["slow", "fast"]
    finally:
        await asyncio.gather(*(s.close() for s in workers))


@pytest.mark.anyio
async def test_a_database_from_before_the_outbox_gains_it_and_keeps_its_data() -> None:
    dsn = services.fresh_database()
    pg, db = services.shared_postgres(), dsn.rsplit("/", 1)[1]
    pg.execute("CREATE TABLE pocketping_schema (version INTEGER NOT NULL)", dbname=db)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            pg.execute(statement, dbname=db)
    pg.execute("INSERT INTO pocketping_schema VALUES (1)", dbname=db)
    pg.execute(
        "INSERT INTO pocketping_sessions (id, visitor_id, created_ms, last_activity_ms) VALUES ('old', 'v', 1, 1)",
        dbname=db,
    )
    storage = PostgresStorage(dsn)
    await storage.open()
    try:
        assert pg.execute("SELECT version FROM pocketping_schema", dbname=db) == [(len(MIGRATIONS),)]
        assert (await storage.get_session("old")) is not None
        item = await storage.outbox_add("slack", "old", "open", "open:old", {})
        assert [r["id"] for r in await storage.outbox_claim(now_ms=0, lease_ms=1, limit=1)] == [item]
        assert await storage.bridge_key_set("slack:thread:old", "1.2")
    finally:
        await storage.close()


def test_telegram_round_trip_and_a_restart_in_the_middle_of_a_retry(tg: FakeTelegram, tmp_path: Path) -> None:
    from .conftest import LiveServer, mounted

    tg = tg
    dsn = services.fresh_database()
    pp1 = make_pp(tg, storage=PostgresStorage(dsn))
    server = LiveServer(mounted(pp1)).start()
    base = server.url + "/pocketping"
    v = Visitor(base)
    try:
        assert pp1.bridge_hub is not None and pp1.bridge_hub.store is pp1.storage  # the durable outbox, not memory
        tg.wait_for(lambda: texts(tg, 1000))  # topic and header
        assert key(pp1, f"telegram:thread:{v.session_id}") == "1000"
        v.say("Hello from a PostgreSQL-backed chat")
        tg.wait_for(lambda: [t for t in texts(tg, 1000) if "PostgreSQL-backed" in t])
        reply = tg.operator_update(1000, "Hi there!")
        assert hook(base, reply).json() == {"ok": True}
        assert v.next_operator_message()["content"] == "Hi there!"
        assert hook(base, reply).status_code == 200  # redelivered: stored once
        assert [m.content for m in stored(pp1, v.session_id, "operator")] == ["Hi there!"]

        with tg.lock:
            tg.down_for.add("sendMessage")
        before = len(tg.sent("sendMessage", ok_only=False))
        v.say("survives a restart")
        tg.wait_for(lambda: len(tg.sent("sendMessage", ok_only=False)) >= before + 2)  # failing attempts
    finally:
        v.close()
        server.stop()
    with tg.lock:
        tg.down_for.clear()
    assert not [t for t in texts(tg) if "survives" in t]
    rows = services.shared_postgres().execute(
        "SELECT kind, attempts FROM pocketping_bridge_outbox", dbname=dsn.rsplit("/", 1)[1]
    )
    assert len(rows) == 1 and rows[0][0] == "message" and rows[0][1] >= 1  # waiting in PostgreSQL

    pp2 = make_pp(tg, storage=PostgresStorage(dsn))
    server2 = LiveServer(mounted(pp2)).start()
    try:
        tg.wait_for(lambda: [t for t in texts(tg) if "survives" in t])
        assert drained(pp2)
        time.sleep(0.3)
        assert len([t for t in texts(tg) if "survives" in t]) == 1
        assert len([t for t in texts(tg) if "PostgreSQL-backed" in t]) == 1
        assert len(tg.sent("createForumTopic")) == 1  # the mapping survived
        assert hook(server2.url + "/pocketping", reply).status_code == 200  # still seen after the restart
        assert len(stored(pp2, v.session_id, "operator")) == 1
    finally:
        server2.stop()
