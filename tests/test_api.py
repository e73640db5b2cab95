"""The seed API in Python: constructor, handlers, errors, blocking facade, public names."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

import pocketping
from pocketping import InvalidInput, MemoryStorage, PocketPing, PocketPingError, SessionNotFound, SQLiteStorage

from .conftest import connect, free_port, wait_healthy


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(pocketping.__all__) == pocketping.__all__
    public = {
        name
        for name, value in vars(pocketping).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert public == set(pocketping.__all__) - {"__version__"}


def test_constructor_takes_every_seed_option(tmp_path: Path) -> None:
    pp = PocketPing(
        bridge_url="http://localhost:3001/",
        welcome_message="Hi! How can we help?",
        on_session_start=lambda session: None,
        on_message=lambda session, message: None,
        on_event=lambda session, event: None,
        storage=SQLiteStorage(tmp_path / "x.db"),
    )
    assert pp.bridge_url == "http://localhost:3001"
    assert pp.welcome_message == "Hi! How can we help?"
    with pytest.raises(InvalidInput, match="bridge_url"):
        PocketPing(bridge_url="localhost:3001", storage=MemoryStorage())
    with pytest.raises(TypeError, match="callable"):
        PocketPing(on_message="not a function", storage=MemoryStorage())  # type: ignore[arg-type]


def test_default_storage_is_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pp = PocketPing()
    assert isinstance(pp.storage, SQLiteStorage)
    sid = asyncio.run(_one_session(pp))
    assert (tmp_path / "pocketping.db").exists() and sid.startswith("sess_")


async def _one_session(pp: PocketPing) -> str:
    async with pp.lifespan():
        session, _, _ = await pp.chat.connect("v", None, {}, None)
        return session.id


@pytest.mark.anyio
async def test_handlers_as_arguments_and_decorators_plain_and_async() -> None:
    calls: list[str] = []
    pp = PocketPing(storage=MemoryStorage(), on_message=lambda s, m: calls.append("arg:" + m.content))

    @pp.on_message
    async def deco(session: Any, message: Any) -> None:
        calls.append("deco:" + message.content)

    @pp.on_session_start
    def started(session: Any) -> None:
        calls.append("start")

    assert deco.__name__ == "deco"  # the decorator returns the function
    async with pp.lifespan():
        session, _, _ = await pp.chat.connect("v", None, {}, None)
        await pp.chat.visitor_message(session.id, "hello", [], None)
        for _ in range(200):
            if len(calls) == 3:
                break
            await asyncio.sleep(0.01)
    assert sorted(calls) == ["arg:hello", "deco:hello", "start"]


@pytest.mark.anyio
async def test_send_message_and_emit_event_validate() -> None:
    pp = PocketPing(storage=MemoryStorage())
    async with pp.lifespan():
        session, _, _ = await pp.chat.connect("v", None, {}, None)
        with pytest.raises(InvalidInput, match="type must be one of"):
            await pp.send_message(session.id, content="x", type="visitor")
        with pytest.raises(InvalidInput, match="empty"):
            await pp.send_message(session.id, content="  ")
        with pytest.raises(InvalidInput, match="limit is 4000"):
            await pp.send_message(session.id, content="x" * 4001)
        with pytest.raises(InvalidInput, match="JSON"):
            await pp.emit_event(session.id, "x", when=object())
        for kind in ("operator", "ai", "system"):
            m = await pp.send_message(session.id, content=kind, type=kind)
            assert m.type == kind and m["type"] == kind
        # event data may use any key, even "name" or "session_id"
        event = await pp.emit_event(session.id, "show_offer", name="n", session_id="s", discount=20)
        assert event.data == {"name": "n", "session_id": "s", "discount": 20}
        with pytest.raises(SessionNotFound):
            await pp.send_message("nope", content="x")
        with pytest.raises(LookupError):  # SessionNotFound is a LookupError, not a KeyError
            await pp.get_session("nope")


@pytest.mark.anyio
async def test_sync_facade_refuses_to_block_a_running_loop() -> None:
    pp = PocketPing(storage=MemoryStorage())
    with pytest.raises(PocketPingError, match="await pp.send_message"):
        pp.sync.send_message("x", content="y")
    with pytest.raises(AttributeError, match="nothing_here"):
        pp.sync.nothing_here  # noqa: B018


def test_sync_facade_without_a_server(tmp_path: Path) -> None:
    pp = PocketPing(storage=SQLiteStorage(tmp_path / "s.db"))
    assert pp.sync.get_sessions() == []
    with pytest.raises(SessionNotFound):
        pp.sync.send_message("sess_x", content="hello")
    pp.sync.stop()


RESTART_APP = """
import sys
from starlette.applications import Starlette
from starlette.routing import Mount
import uvicorn
from pocketping import PocketPing, SQLiteStorage
pp = PocketPing(storage=SQLiteStorage(sys.argv[1]))
app = Starlette(routes=[Mount("/pocketping", app=pp.asgi_app)], lifespan=pp.lifespan)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _start(db: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", RESTART_APP, str(db), str(port)], env={**os.environ})
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc


def test_history_survives_a_server_restart_on_sqlite(tmp_path: Path) -> None:
    db, port = tmp_path / "restart.db", free_port()
    proc = _start(db, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/pocketping") as http:
            sid = connect(http)["sessionId"]
            for text in ("first", "second"):
                assert http.post("/message", json={"sessionId": sid, "content": text}).status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(10) in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    proc = _start(db, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/pocketping") as http:
            body = connect(http, sessionId=sid)
            assert body["sessionId"] == sid
            assert [m["content"] for m in body["messages"]] == ["first", "second"]
    finally:
        proc.terminate()
        assert proc.wait(10) in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
