"""Host-app integration: lifespans compose, nothing leaks, path dispatch for ASGI and WSGI."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from pocketping import PocketPing, SQLiteStorage

from .conftest import LiveServer, connect


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("pocketping")}


def test_lifespan_starts_and_stops_without_leaking_threads(tmp_path: Path) -> None:
    before = _threads()
    events: list[str] = []

    @asynccontextmanager
    async def host_lifespan(app: Any) -> AsyncIterator[None]:
        events.append("host up")
        yield
        events.append("host down")

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host page")

    pp = PocketPing(storage=SQLiteStorage(tmp_path / "l.db"))
    host = Starlette(routes=[Route("/", hello)], lifespan=host_lifespan)
    server = LiveServer(pp.wrap(host)).start()
    try:
        assert pp.started and events == ["host up"]
        assert "pocketping-sqlite" in {n.rstrip("_0123456789") for n in _threads()}
        assert httpx.get(server.url + "/").text == "host page"
        with httpx.Client(base_url=server.url + "/pocketping") as http:
            assert connect(http)["sessionId"].startswith("sess_")
            assert http.get("/health").json()["status"] == "ok"
    finally:
        server.stop()
    assert events == ["host up", "host down"]
    assert not pp.started
    assert _threads() == before


def test_wrap_rejects_the_root_path() -> None:
    pp = PocketPing(storage=SQLiteStorage(":memory:"))
    with pytest.raises(ValueError, match="/pocketping"):
        pp.wrap(Starlette(), path="/")


def test_wsgi_dispatch_keeps_the_host_app(tmp_path: Path) -> None:
    pp = PocketPing(storage=SQLiteStorage(tmp_path / "w.db"))

    def host(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"host saw {environ['PATH_INFO']}".encode()]

    app = pp.wrap_wsgi(host)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver") as http:
        assert http.get("/pocketpingx").text == "host saw /pocketpingx"
        assert http.get("/about").text == "host saw /about"
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver/pocketping") as widget:
        assert connect(widget)["sessionId"].startswith("sess_")
    pp.sync.stop()
