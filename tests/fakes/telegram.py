"""A fake Telegram Bot API: ``POST /bot<token>/<method>``, ``{"ok": true, "result": ...}``
envelopes and ``{"ok": false, "error_code", "description", "parameters": {"retry_after"}}`` errors."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .base import FakePlatform

CHAT_ID = -1001234567890


class FakeTelegram(FakePlatform):
    def __init__(self, token: str = "123456:TEST-token") -> None:
        super().__init__()
        self.token = token
        self._message_ids = itertools.count(1)
        self._thread_ids = itertools.count(1000)
        self._update_ids = itertools.count(500)
        self.topics: dict[int, dict[str, Any]] = {}
        self.updates: list[dict[str, Any]] = []  # served by getUpdates
        self.app = Starlette(routes=[Route("/bot{token}/{method}", self.handle, methods=["POST", "GET"])])

    def ok(self, result: Any) -> JSONResponse:
        return JSONResponse({"ok": True, "result": result})

    def error(self, code: int, description: str, retry_after: float | None = None) -> JSONResponse:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return JSONResponse(body, status_code=code)

    async def handle(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        body = await request.json() if await request.body() else {}
        if request.path_params["token"] != self.token:
            self.record(method, body, request.headers, 401)
            return self.error(401, "Unauthorized")
        fault = await self.gate(method)
        if fault is not None:
            status, retry_after = fault
            self.record(method, body, request.headers, status)
            if status == 429:
                return self.error(429, f"Too Many Requests: retry after {retry_after}", retry_after)
            return self.error(status, "Internal Server Error" if status >= 500 else "Bad Request")
        self.record(method, body, request.headers)
        if method == "getMe":
            return self.ok({"id": 42, "is_bot": True, "first_name": "PocketPing", "username": "pocketping_bot"})
        if method == "createForumTopic":
            tid = next(self._thread_ids)
            self.topics[tid] = {"name": body["name"], "closed": False}
            return self.ok({"message_thread_id": tid, "name": body["name"], "icon_color": 7322096})
        if method == "sendMessage":
            thread = body.get("message_thread_id")
            if thread is not None and thread not in self.topics:
                return self.error(400, "Bad Request: message thread not found")
            message = {
                "message_id": next(self._message_ids),
                "from": {"id": 42, "is_bot": True, "first_name": "PocketPing"},
                "chat": {"id": CHAT_ID, "type": "supergroup", "is_forum": True},
                "date": int(time.time()),
                "text": body["text"],
            }
            if thread is not None:
                message.update(message_thread_id=thread, is_topic_message=True)
            return self.ok(message)
        if method in ("closeForumTopic", "reopenForumTopic"):
            self.topics[body["message_thread_id"]]["closed"] = method == "closeForumTopic"
            return self.ok(True)
        if method in ("deleteWebhook", "setWebhook", "deleteMessage", "editMessageText"):
            return self.ok(True)
        if method == "getUpdates":
            deadline = time.monotonic() + min(float(body.get("timeout", 0)), 5.0)
            offset = body.get("offset", 0)
            while True:
                with self.lock:
                    ready = [u for u in self.updates if u["update_id"] >= offset]
                if ready or time.monotonic() >= deadline:
                    return self.ok(ready)
                await asyncio.sleep(0.02)
        return self.error(404, "Not Found: method not found")

    # -- what an operator does in the group -------------------------------------------------

    def operator_update(
        self,
        thread: int,
        text: str,
        *,
        edited_id: int | None = None,
        reply_to: int | None = None,
        is_bot: bool = False,
        update_id: int | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": edited_id or next(self._message_ids),
            "message_thread_id": thread,
            "is_topic_message": True,
            "from": {"id": 7 if not is_bot else 99, "is_bot": is_bot, "first_name": "Alice"},
            "chat": {"id": CHAT_ID, "type": "supergroup", "is_forum": True},
            "date": int(time.time()),
            "text": text,
            "reply_to_message": {"message_id": reply_to or thread, "forum_topic_created": {"name": "x"}}
            if reply_to is None
            else {"message_id": reply_to},
        }
        key = "edited_message" if edited_id else "message"
        if edited_id:
            message["edit_date"] = int(time.time())
        return {"update_id": update_id if update_id is not None else next(self._update_ids), key: message}
