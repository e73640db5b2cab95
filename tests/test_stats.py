"""Conversation statistics on Memory, SQLite and PostgreSQL: a known history (times chosen
through the chat service's mirror calls, as the bridge server records them) gives known
figures; ``pocketping stats --app`` prints them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pocketping import InvalidInput, MemoryStorage, PocketPing, SQLiteStorage, StorageCapabilityError
from pocketping.models import Message, Session, new_id

from . import services
from .test_bridges_delivery import SeedStorage

T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def _storage(kind: str, tmp: Path) -> Any:
    if kind == "memory":
        return MemoryStorage()
    if kind == "sqlite":
        return SQLiteStorage(tmp / "stats.db")
    from pocketping import PostgresStorage

    return PostgresStorage(services.fresh_database())


async def history(pp: PocketPing) -> None:
    """Five conversations: four in the last 30 days (one unanswered), one 40 days old."""

    async def conversation(start: datetime, replies: list[tuple[float, str, dict[str, Any]]]) -> str:
        session = Session(id=new_id("sess"), visitor_id=new_id("v"), created_at=start, last_activity=start)
        await pp.chat.mirror_session(session)
        visitor = Message(id=new_id("msg"), session_id=session.id, content="hi", sender="visitor", created_at=start)
        await pp.chat.mirror_message(session, visitor)
        for after, sender, metadata in replies:
            reply = Message(
                id=new_id("msg"),
                session_id=session.id,
                content="hello",
                sender=sender,
                created_at=start + timedelta(seconds=after),
                metadata=metadata,
            )
            await pp.chat.mirror_message(session, reply)
        return session.id

    a = await conversation(T0, [(30, "operator", {"source": "console"})])
    await conversation(T0 + timedelta(seconds=60), [(120, "operator", {}), (140, "ai", {})])
    await conversation(T0 + timedelta(seconds=300), [])
    d = await conversation(T0 + timedelta(seconds=400), [(10, "operator", {"bridge": "telegram"})])
    await conversation(T0 - timedelta(days=40), [(5, "operator", {})])
    await pp.chat.rate(a, 5)
    await pp.chat.rate(d, 2, "slow")


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_figures_of_a_known_history(kind: str, tmp_path: Path) -> None:
    pp = PocketPing(storage=_storage(kind, tmp_path), rate_limits=None)

    async def scenario() -> dict[str, Any]:
        await pp.start()
        try:
            await history(pp)
            return (await pp.get_stats()).to_dict()
        finally:
            await pp.stop()

    found = asyncio.run(scenario())
    assert {k: v for k, v in found.items() if k not in ("since", "until")} == {
        "conversations": 4,
        "visitorMessages": 4,
        "replies": {"ai": 1, "api": 1, "console": 1, "telegram": 1},
        "responseRate": 0.75,
        "firstResponseMedian": 30.0,
        "firstResponseP90": 120.0,
        "unanswered": 1,
        "csatCount": 2,
        "csatSatisfied": 0.5,
    }


def test_windows_and_errors(tmp_path: Path) -> None:
    pp = PocketPing(storage=MemoryStorage(), rate_limits=None)
    with pytest.raises(InvalidInput, match="until must be after since"):
        pp.sync.get_stats(since="2026-12-02T00:00:00Z", until="2026-12-01T00:00:00Z")
    with pytest.raises(InvalidInput, match="since / until"):
        pp.sync.get_stats(since="yesterday")
    empty = pp.sync.get_stats(since=T0 - timedelta(days=100), until=T0 - timedelta(days=99))
    assert empty.conversations == 0 and empty.response_rate is None and empty.first_response_median is None
    with pytest.raises(StorageCapabilityError, match="conversation_stats"):
        PocketPing(storage=SeedStorage()).sync.get_stats()


def test_the_stats_command(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    (tmp_path / "chatapp.py").write_text(
        f"from pocketping import PocketPing, SQLiteStorage\npp = PocketPing(storage=SQLiteStorage({str(db)!r}))\n"
    )
    pp = PocketPing(storage=SQLiteStorage(db), rate_limits=None)

    async def fill() -> None:
        await pp.start()
        try:
            await history(pp)
        finally:
            await pp.stop()

    asyncio.run(fill())
    run = subprocess.run(
        [sys.executable, "-m", "pocketping.cli", "stats", "--app", "chatapp:pp", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    assert figures["conversations"] == 4 and figures["firstResponseP90"] == 120.0
    text = subprocess.run(
        [sys.executable, "-m", "pocketping.cli", "stats", "--app", "chatapp:pp", "--since", "2020-01-01T00:00:00Z"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0 and "conversations  5" in text.stdout, text.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "pocketping.cli", "stats", "--app", "chatapp"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "module:attribute" in bad.stderr
