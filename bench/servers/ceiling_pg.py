"""The ceiling with PostgreSQL: the widget protocol's happy path on raw Starlette + psycopg 3.

Same routes and answers as ``ceiling.py``, but sessions and messages live in PostgreSQL
(``BENCH_PG_DSN``), reached through a ``psycopg_pool.AsyncConnectionPool`` (1 to 10
connections, like ``PostgresStorage``'s default) of autocommit connections: one statement, one
round trip, no BEGIN/COMMIT.

POST /connect: SELECT by sessionId (if given), else SELECT by visitorId (index), else ONE INSERT
into ``ceiling_sessions``; a resumed session also SELECTs its messages. POST /message: ONE INSERT
into ``ceiling_messages`` (the foreign key is the session check: unknown session -> 404), then
the echo to the session's sockets. WS /stream: one SELECT of the session, then a set of sockets
per session in memory. POST /bench/push: per session one INSERT, then the push. The tables are
created on startup (``CREATE TABLE IF NOT EXISTS``), named apart from the library's
``pocketping_*`` tables.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from psycopg.errors import ForeignKeyViolation
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

SCHEMA = """
CREATE TABLE IF NOT EXISTS ceiling_sessions (
    id TEXT PRIMARY KEY,
    visitor_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    metadata JSONB
);
CREATE INDEX IF NOT EXISTS ceiling_sessions_by_visitor ON ceiling_sessions (visitor_id, created_ms DESC);
CREATE TABLE IF NOT EXISTS ceiling_messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES ceiling_sessions (id) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL,
    sender TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ceiling_messages_by_session ON ceiling_messages (session_id, created_ms);
"""

pool = AsyncConnectionPool(os.environ["BENCH_PG_DSN"], min_size=1, max_size=10, open=False, kwargs={"autocommit": True})
sockets: dict[str, set[WebSocket]] = {}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await pool.open(wait=True, timeout=30)
    async with pool.connection() as conn:
        await conn.execute(SCHEMA.encode())  # several statements: simple query protocol
    try:
        yield
    finally:
        await pool.close(timeout=5)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def connect(request: Request) -> JSONResponse:
    body = await request.json()
    visitor_id = body["visitorId"]
    sid = body.get("sessionId")
    async with pool.connection() as conn:
        row = None
        if sid:
            row = await (await conn.execute("SELECT id FROM ceiling_sessions WHERE id = %s", (sid,))).fetchone()
        if row is None:
            row = await (
                await conn.execute(
                    "SELECT id FROM ceiling_sessions WHERE visitor_id = %s ORDER BY created_ms DESC LIMIT 1",
                    (visitor_id,),
                )
            ).fetchone()
        if row is None:
            sid = "sess_" + secrets.token_urlsafe(12)
            await conn.execute(
                "INSERT INTO ceiling_sessions (id, visitor_id, created_ms, metadata) VALUES (%s, %s, %s, %s)",
                (sid, visitor_id, time.time_ns() // 1_000_000, Jsonb(body.get("metadata"))),
            )
            history: list[dict[str, Any]] = []
        else:
            sid = row[0]
            rows = await (
                await conn.execute(
                    "SELECT id, created_ms, sender, content, status FROM ceiling_messages "
                    "WHERE session_id = %s ORDER BY created_ms",
                    (sid,),
                )
            ).fetchall()
            history = [
                {"id": r[0], "sessionId": sid, "content": r[3], "sender": r[2], "timestamp": _iso(r[1]), "status": r[4]}
                for r in rows
            ]
    return JSONResponse({"sessionId": sid, "visitorId": visitor_id, "operatorOnline": False, "messages": history})


async def _store(sid: str, content: str, sender: str) -> dict[str, Any] | None:
    """ONE INSERT; None when the session does not exist (foreign key)."""
    ms = time.time_ns() // 1_000_000
    msg = {
        "id": "msg_" + secrets.token_urlsafe(12),
        "sessionId": sid,
        "content": content,
        "sender": sender,
        "timestamp": _iso(ms),
        "status": "sent",
    }
    try:
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO ceiling_messages (id, session_id, created_ms, sender, content, status) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (msg["id"], sid, ms, sender, content, "sent"),
            )
    except ForeignKeyViolation:
        return None
    return msg


async def _push(sid: str, msg: dict[str, Any]) -> None:
    targets = sockets.get(sid)
    if targets:
        text = json.dumps({"type": "message", "data": msg})
        for ws in list(targets):
            try:
                await ws.send_text(text)
            except Exception:
                targets.discard(ws)


async def message(request: Request) -> JSONResponse:
    body = await request.json()
    sid = body["sessionId"]
    msg = await _store(sid, body["content"], "visitor")
    if msg is None:
        return JSONResponse({"error": "session_not_found"}, status_code=404)
    await _push(sid, msg)
    return JSONResponse({"messageId": msg["id"], "timestamp": msg["timestamp"]})


async def stream(ws: WebSocket) -> None:
    sid = ws.query_params.get("sessionId", "")
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT 1 FROM ceiling_sessions WHERE id = %s", (sid,))).fetchone()
    if row is None:
        await ws.close(code=1008)
        return
    await ws.accept()
    mine = sockets.setdefault(sid, set())
    mine.add(ws)
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        mine.discard(ws)
        if not mine:
            sockets.pop(sid, None)


async def push(request: Request) -> JSONResponse:
    body = await request.json()
    content = body.get("content", "Hello from the operator")
    for sid in body["sessionIds"]:
        msg = await _store(sid, content, "operator")
        if msg is not None:
            await _push(sid, msg)
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/pocketping/connect", connect, methods=["POST"]),
        Route("/pocketping/message", message, methods=["POST"]),
        WebSocketRoute("/pocketping/stream", stream),
        Route("/bench/push", push, methods=["POST"]),
    ],
    lifespan=lifespan,
)
