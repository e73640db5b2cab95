"""The ceiling: the widget protocol's happy path on raw Starlette, everything in memory.

POST /connect (resume by sessionId, else by visitorId through an index, else create),
POST /message (store, echo to the session's sockets), WS /stream (a set of sockets per
session) and POST /bench/push (operator messages to the given sessions' sockets). No
validation beyond what the happy path needs, no CORS, no persistence: what a Python ASGI
server can do at best on this protocol.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

sessions: dict[str, dict] = {}
by_visitor: dict[str, str] = {}
messages: dict[str, list[dict]] = {}
sockets: dict[str, set[WebSocket]] = {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def connect(request: Request) -> JSONResponse:
    body = await request.json()
    visitor_id = body["visitorId"]
    sid = body.get("sessionId")
    session = sessions.get(sid) if sid else None
    if session is None:
        known = by_visitor.get(visitor_id)
        session = sessions.get(known) if known else None
    if session is None:
        session = {"id": "sess_" + secrets.token_urlsafe(12), "visitorId": visitor_id, "metadata": body.get("metadata")}
        sessions[session["id"]] = session
        by_visitor[visitor_id] = session["id"]
        messages[session["id"]] = []
    return JSONResponse(
        {
            "sessionId": session["id"],
            "visitorId": visitor_id,
            "operatorOnline": False,
            "messages": messages[session["id"]],
        }
    )


def _store(sid: str, content: str, sender: str) -> dict:
    msg = {"id": "msg_" + secrets.token_urlsafe(12), "sessionId": sid, "content": content,
           "sender": sender, "timestamp": _now(), "status": "sent"}
    messages[sid].append(msg)
    return msg


async def _push(sid: str, msg: dict) -> None:
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
    if sid not in sessions:
        return JSONResponse({"error": "session_not_found"}, status_code=404)
    msg = _store(sid, body["content"], "visitor")
    await _push(sid, msg)
    return JSONResponse({"messageId": msg["id"], "timestamp": msg["timestamp"]})


async def stream(ws: WebSocket) -> None:
    sid = ws.query_params.get("sessionId", "")
    if sid not in sessions:
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
        if sid in sessions:
            await _push(sid, _store(sid, content, "operator"))
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/pocketping/connect", connect, methods=["POST"]),
        Route("/pocketping/message", message, methods=["POST"]),
        WebSocketRoute("/pocketping/stream", stream),
        Route("/bench/push", push, methods=["POST"]),
    ]
)
