"""A small Discord Gateway client (websockets): HELLO, IDENTIFY, heartbeat/ACK, RESUME,
RECONNECT, INVALID_SESSION; dispatches MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE.

Discord delivers ordinary messages typed in a thread only over the Gateway, so this is how
operator replies reach PocketPing. It needs a long-running process (not serverless).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from ..outbox import cancel

log = logging.getLogger("pocketping.bridges")

# GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT (privileged: enable it in the developer portal)
INTENTS = (1 << 0) | (1 << 9) | (1 << 15)
_FATAL_CLOSE = {
    4004: "authentication failed",
    4010: "invalid shard",
    4011: "sharding required",
    4012: "invalid API version",
    4013: "invalid intents",
    4014: "disallowed intents",
}


class GatewayClient:
    def __init__(
        self,
        token: str,
        url: Callable[[], Awaitable[str]],
        on_dispatch: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.token = token
        self._url = url
        self.on_dispatch = on_dispatch
        self.session_id: str | None = None
        self.resume_url: str | None = None
        self.seq: int | None = None
        self.user_id: str | None = None
        self.ready = asyncio.Event()
        self.max_backoff = 30.0
        self._extra = {"session_id": None, "bridge": "discord"}

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._connection()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                if code in _FATAL_CLOSE:
                    log.error(
                        "Discord Gateway closed: %s (%s); not reconnecting", _FATAL_CLOSE[code], code, extra=self._extra
                    )
                    return
                log.warning(
                    "Discord Gateway connection lost: %r; reconnecting in %.1f s", exc, backoff, extra=self._extra
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(self.max_backoff, backoff * 2)

    async def _connection(self) -> None:
        from websockets.asyncio.client import connect

        resuming = self.session_id is not None and self.seq is not None and self.resume_url is not None
        base = self.resume_url if resuming and self.resume_url else await self._url()
        url = base + ("&" if "?" in base else "?") + "v=10&encoding=json"
        async with connect(url, max_size=2**22, open_timeout=10) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if hello.get("op") != 10:
                raise ConnectionError(f"expected HELLO, got op {hello.get('op')}")
            interval = float(hello["d"]["heartbeat_interval"]) / 1000
            if resuming:
                await ws.send(
                    json.dumps({"op": 6, "d": {"token": self.token, "session_id": self.session_id, "seq": self.seq}})
                )
            else:
                await ws.send(
                    json.dumps(
                        {
                            "op": 2,
                            "d": {
                                "token": self.token,
                                "intents": INTENTS,
                                "properties": {"os": "linux", "browser": "pocketping", "device": "pocketping"},
                            },
                        }
                    )
                )
            acked = [True]
            beat = asyncio.get_running_loop().create_task(self._heartbeat(ws, interval, acked))
            try:
                async for raw in ws:
                    payload = json.loads(raw)
                    if not await self._handle(ws, payload, acked):
                        return
            finally:
                await cancel(beat)

    async def _heartbeat(self, ws: Any, interval: float, acked: list[bool]) -> None:
        await asyncio.sleep(interval * random.random())
        while True:
            if not acked[0]:  # zombied connection: close and resume
                await ws.close(4000, "heartbeat not acknowledged")
                return
            acked[0] = False
            await ws.send(json.dumps({"op": 1, "d": self.seq}))
            await asyncio.sleep(interval)

    async def _handle(self, ws: Any, payload: dict[str, Any], acked: list[bool]) -> bool:
        op, data = payload.get("op"), payload.get("d")
        if payload.get("s") is not None:
            self.seq = payload["s"]
        if op == 0:
            kind = payload.get("t")
            if kind == "READY" and isinstance(data, dict):
                self.session_id = data.get("session_id")
                self.resume_url = data.get("resume_gateway_url")
                self.user_id = str((data.get("user") or {}).get("id") or "") or None
                self.ready.set()
            elif kind == "RESUMED":
                self.ready.set()
            elif isinstance(kind, str) and isinstance(data, dict):
                try:
                    await self.on_dispatch(kind, data)
                except Exception:
                    log.exception("handling %s failed", kind, extra=self._extra)
        elif op == 1:
            await ws.send(json.dumps({"op": 1, "d": self.seq}))
        elif op == 11:
            acked[0] = True
        elif op == 7:  # RECONNECT: resume on a new connection
            await ws.close(4000, "reconnect requested")
            return False
        elif op == 9:  # INVALID_SESSION; d tells whether it is resumable
            if not data:
                self.session_id = self.seq = None
            await asyncio.sleep(random.uniform(0.1, 1.0))
            await ws.close(4000, "invalid session")
            return False
        return True
