"""A fake Discord: REST (``/api/v10/channels/...``, ``Authorization: Bot <token>``, 429 bodies
``{"message", "retry_after", "global"}``, message nonces) and a Gateway over websockets
(HELLO, IDENTIFY/READY, heartbeat ACK, RESUME/RESUMED, RECONNECT, dispatches)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ..conftest import free_port
from .base import FakePlatform

CHANNEL = "1100000000000000001"
BOT_ID = "1200000000000000042"
GUILD = "1000000000000000000"


class FakeDiscord(FakePlatform):
    def __init__(self, token: str = "discord-bot-token") -> None:
        super().__init__()
        self.token = token
        self._ids = itertools.count(1300000000000000000)
        self.threads: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self._nonces: dict[tuple[str, str], dict[str, Any]] = {}
        self.gateway = FakeGateway(token)
        self.app = Starlette(
            routes=[
                Route("/api/v10/gateway/bot", self.gateway_bot, methods=["GET"]),
                Route("/api/v10/channels/{cid}/threads", self.create_thread, methods=["POST"]),
                Route("/api/v10/channels/{cid}/messages", self.create_message, methods=["POST"]),
                Route("/api/v10/channels/{cid}/messages/{mid}", self.edit_message, methods=["PATCH"]),
                Route("/api/v10/channels/{cid}/messages/{mid}", self.delete_message, methods=["DELETE"]),
                Route("/api/v10/channels/{cid}", self.modify_channel, methods=["PATCH"]),
            ]
        )

    def start(self) -> FakeDiscord:
        self.gateway.start()
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        self.gateway.stop()

    async def _guard(self, request: Request, method: str) -> tuple[Any, Response | None]:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        if request.headers.get("authorization") != f"Bot {self.token}":
            self.record(method, body, request.headers, 401)
            return body, JSONResponse({"message": "401: Unauthorized", "code": 0}, 401)
        fault = await self.gate(method)
        if fault is not None:
            status, retry_after = fault
            self.record(method, body, request.headers, status)
            if status == 429:
                return body, JSONResponse(
                    {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                    429,
                    {"Retry-After": str(int(retry_after or 1)), "X-RateLimit-Scope": "user"},
                )
            return body, JSONResponse({"message": "Internal Server Error", "code": 0}, status)
        self.record(method, body, request.headers)
        return body, None

    async def gateway_bot(self, request: Request) -> Response:
        _, fail = await self._guard(request, "gateway_bot")
        return fail or JSONResponse(
            {
                "url": self.gateway.url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
            }
        )

    async def create_thread(self, request: Request) -> Response:
        body, fail = await self._guard(request, "create_thread")
        if fail:
            return fail
        tid = str(next(self._ids))
        thread = {
            "id": tid,
            "type": body.get("type", 12),
            "parent_id": request.path_params["cid"],
            "guild_id": GUILD,
            "name": body["name"],
            "thread_metadata": {
                "archived": False,
                "locked": False,
                "auto_archive_duration": body.get("auto_archive_duration", 4320),
            },
        }
        self.threads[tid] = thread
        return JSONResponse(thread, 201)

    async def create_message(self, request: Request) -> Response:
        body, fail = await self._guard(request, "create_message")
        if fail:
            return fail
        cid = request.path_params["cid"]
        if cid not in self.threads and cid != CHANNEL:
            return JSONResponse({"message": "Unknown Channel", "code": 10003}, 404)
        nonce = body.get("nonce")
        if nonce and body.get("enforce_nonce") and (cid, nonce) in self._nonces:
            return JSONResponse(self._nonces[(cid, nonce)])  # Discord returns the earlier message
        if cid in self.threads:
            self.threads[cid]["thread_metadata"]["archived"] = False  # sending unarchives
        mid = str(next(self._ids))
        message = {
            "id": mid,
            "channel_id": cid,
            "type": 0,
            "content": body.get("content", ""),
            "nonce": nonce,
            "author": {"id": BOT_ID, "username": "PocketPing", "bot": True},
            "timestamp": "2026-01-01T00:00:00+00:00",
        }
        self.messages[mid] = message
        if nonce:
            self._nonces[(cid, nonce)] = message
        return JSONResponse(message)

    async def edit_message(self, request: Request) -> Response:
        body, fail = await self._guard(request, "edit_message")
        if fail:
            return fail
        message = self.messages.get(request.path_params["mid"])
        if message is None or message["channel_id"] != request.path_params["cid"]:
            return JSONResponse({"message": "Unknown Message", "code": 10008}, 404)
        message["content"] = body["content"]
        return JSONResponse(message)

    async def delete_message(self, request: Request) -> Response:
        _, fail = await self._guard(request, "delete_message")
        if fail:
            return fail
        message = self.messages.get(request.path_params["mid"])
        if message is None or message["channel_id"] != request.path_params["cid"]:
            return JSONResponse({"message": "Unknown Message", "code": 10008}, 404)
        del self.messages[request.path_params["mid"]]
        return Response(status_code=204)

    async def modify_channel(self, request: Request) -> Response:
        body, fail = await self._guard(request, "modify_channel")
        if fail:
            return fail
        thread = self.threads.get(request.path_params["cid"])
        if thread is None:
            return JSONResponse({"message": "Unknown Channel", "code": 10003}, 404)
        if "archived" in body:
            thread["thread_metadata"]["archived"] = body["archived"]
        return JSONResponse(thread)

    def posted(self, thread: str | None = None) -> list[str]:
        """Contents of the messages that exist (a nonce-deduplicated retry adds none)."""
        return [m["content"] for m in list(self.messages.values()) if thread is None or m["channel_id"] == thread]

    def operator_message(
        self, thread: str, content: str, *, bot: bool = False, mid: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": mid or str(next(self._ids)),
            "channel_id": thread,
            "guild_id": GUILD,
            "type": 0,
            "content": content,
            "author": {
                "id": "1400000000000000007" if not bot else "1400000000000000099",
                "username": "alice",
                "global_name": "Alice",
                "bot": bot,
            },
            "member": {"nick": "Alice (support)"},
            "timestamp": "2026-01-01T00:00:00+00:00",
        }


class FakeGateway:
    """A Discord Gateway on ws://127.0.0.1:<port>; the test thread drives it with ``dispatch``."""

    def __init__(self, token: str, heartbeat_ms: int = 300) -> None:
        self.token = token
        self.heartbeat_ms = heartbeat_ms
        self.port = free_port()
        self.ops: list[dict[str, Any]] = []  # what clients sent (op 2 identify, op 6 resume, op 1 heartbeats)
        self.seq = 0
        self.sent: list[dict[str, Any]] = []  # dispatches, for replay on resume
        self.clients: set[ServerConnection] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: Any = None
        self.lock = threading.Lock()
        self.ack_heartbeats = True  # False: a zombied connection (heartbeats never acknowledged)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

        async def open_server() -> Any:
            return await serve(self._handler, "127.0.0.1", self.port)

        self._server = asyncio.run_coroutine_threadsafe(open_server(), self.loop).result(10)

    def stop(self) -> None:
        async def shut() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def received(self, op: int) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.ops if p.get("op") == op]

    async def _handler(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}, "s": None, "t": None}))
        try:
            async for raw in ws:
                p = json.loads(raw)
                with self.lock:
                    self.ops.append(p)
                op, d = p.get("op"), p.get("d")
                if op == 1:
                    if self.ack_heartbeats:
                        await ws.send(json.dumps({"op": 11}))
                elif op == 2:
                    if d.get("token") != self.token:
                        await ws.close(4004, "Authentication failed.")
                        return
                    self.clients.add(ws)
                    await self._dispatch_to(
                        ws,
                        "READY",
                        {
                            "v": 10,
                            "session_id": "gw-session-1",
                            "resume_gateway_url": self.url,
                            "user": {"id": BOT_ID, "username": "PocketPing", "bot": True},
                        },
                    )
                elif op == 6:
                    self.clients.add(ws)
                    for old in [e for e in self.sent if e["s"] > (d.get("seq") or 0)]:
                        await ws.send(json.dumps(old))
                    await self._dispatch_to(ws, "RESUMED", {})
        except ConnectionClosed:
            pass  # the client went away (PocketPing stopped, or it reconnects)
        finally:
            self.clients.discard(ws)

    async def _dispatch_to(self, ws: ServerConnection, t: str, d: dict[str, Any]) -> None:
        self.seq += 1
        payload = {"op": 0, "s": self.seq, "t": t, "d": d}
        if t not in ("READY", "RESUMED"):
            self.sent.append(payload)
        await ws.send(json.dumps(payload))

    def dispatch(self, t: str, d: dict[str, Any]) -> None:
        async def go() -> None:
            self.seq += 1
            payload = {"op": 0, "s": self.seq, "t": t, "d": d}
            self.sent.append(payload)
            for ws in list(self.clients):
                await ws.send(json.dumps(payload))

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def reconnect(self) -> None:
        """Send op 7 RECONNECT to every client (they must resume)."""

        async def go() -> None:
            for ws in list(self.clients):
                await ws.send(json.dumps({"op": 7, "d": None}))

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def invalid_session(self, resumable: bool) -> None:
        """Send op 9 INVALID_SESSION to every client."""

        async def go() -> None:
            for ws in list(self.clients):
                await ws.send(json.dumps({"op": 9, "d": resumable}))

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def wait_clients(self, n: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.clients) < n:
            if time.monotonic() > deadline:
                raise AssertionError("no Gateway client connected")
            time.sleep(0.02)
