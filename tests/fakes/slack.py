"""A fake Slack Web API: ``POST /api/<method>`` with ``Authorization: Bearer xoxb-…``; errors are
HTTP 200 ``{"ok": false, "error"}``, rate limits HTTP 429 with ``Retry-After``."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pocketping.bridges.slack import slack_signature

from .base import FakePlatform

CHANNEL = "C0PP12345"
BOT_USER = "U0BOTUSER"
BOT_ID = "B12345678"


class FakeSlack(FakePlatform):
    def __init__(
        self, token: str = "xoxb-test-token", signing_secret: str = "8f742231b10e8888abcd99yyyzzz85a5"
    ) -> None:
        super().__init__()
        self.token = token
        self.signing_secret = signing_secret
        self._ts = itertools.count(1)
        self._events = itertools.count(1)
        self.app = Starlette(routes=[Route("/api/{method}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        if request.headers.get("authorization") != f"Bearer {self.token}":
            self.record(method, body, request.headers, 401)
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        fault = await self.gate(method)
        if fault is not None:
            status, retry_after = fault
            self.record(method, body, request.headers, status)
            if status == 429:
                return JSONResponse(
                    {"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(int(retry_after or 1))}
                )
            return JSONResponse({"ok": False, "error": "internal_error"}, status)
        self.record(method, body, request.headers)
        if method == "auth.test":
            return JSONResponse(
                {"ok": True, "user_id": BOT_USER, "bot_id": BOT_ID, "team_id": "T0TEAM", "user": "pocketping"}
            )
        if method == "chat.postMessage":
            if body.get("channel") != CHANNEL:
                return JSONResponse({"ok": False, "error": "channel_not_found"})
            ts = f"{1700000000 + next(self._ts)}.000100"
            message = {"type": "message", "text": body["text"], "ts": ts, "bot_id": BOT_ID, "user": BOT_USER}
            if body.get("thread_ts"):
                message["thread_ts"] = body["thread_ts"]
            return JSONResponse({"ok": True, "channel": CHANNEL, "ts": ts, "message": message})
        if method == "users.info":
            user = body.get("user")
            return JSONResponse({"ok": True, "user": {"id": user, "name": "bob", "real_name": "Bob Operator"}})
        if method in ("chat.update", "chat.delete"):
            return JSONResponse({"ok": True, "channel": CHANNEL, "ts": body.get("ts")})
        return JSONResponse({"ok": False, "error": "unknown_method"})

    # -- what Slack sends to the Events API endpoint ----------------------------------------

    def event(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        return {
            "token": "legacy",
            "team_id": "T0TEAM",
            "api_app_id": "A0APP",
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._events):08d}",
            "event_time": int(time.time()),
            "event": {"channel": CHANNEL, **event},
        }

    def reply(self, thread_ts: str, text: str, *, user: str = "U0ALICE", **extra: Any) -> dict[str, Any]:
        ts = f"{1700000000 + next(self._ts)}.000200"
        return self.event({"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": thread_ts, **extra})

    def signed(
        self, payload: dict[str, Any], *, secret: str | None = None, at: float | None = None
    ) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload).encode()
        ts = str(int(at if at is not None else time.time()))
        sig = slack_signature(secret or self.signing_secret, ts, body)
        return body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "Content-Type": "application/json"}
