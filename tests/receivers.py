"""Real receivers for what PocketPing sends out: a webhook endpoint that verifies with the
``standardwebhooks`` package and deduplicates by ``webhook-id`` (as the spec asks receivers
to), and an aiosmtpd mailbox."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections import Counter
from email.message import EmailMessage
from typing import Any

from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pocketping import verify_webhook

from .conftest import LiveServer


class Receiver:
    """A webhook endpoint: verifies, records, deduplicates; ``answers`` are the statuses of the
    next requests (then 204)."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.lock = threading.Lock()
        self.attempts: list[tuple[float, str, int]] = []  # (time, webhook-id, status answered)
        self.accepted: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.answers: list[int] = []
        self.rejected = 0
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        self.server = LiveServer(app, port=port)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            event = Webhook(self.secret).verify(body, headers)
            assert verify_webhook(body, headers, self.secret) == event
        except Exception:
            with self.lock:
                self.rejected += 1
            return JSONResponse({"error": "bad signature"}, status_code=400)
        with self.lock:
            status = self.answers.pop(0) if self.answers else 204
            self.attempts.append((time.monotonic(), headers["webhook-id"], status))
            if status < 300 and headers["webhook-id"] not in self.accepted:
                self.accepted[headers["webhook-id"]] = event
                self.order.append(headers["webhook-id"])
        return Response(status_code=status)

    @property
    def url(self) -> str:
        return self.server.url + "/hook"

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.accepted[i] for i in self.order]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts; ``refuse(n)`` answers the next
    ``n`` messages with a temporary failure (451), as a busy mail server does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[float, EmailMessage]] = []
        self.to_refuse = 0
        self.refused = 0

    def refuse(self, n: int) -> None:
        with self.lock:
            self.to_refuse = n

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            if self.to_refuse > 0:
                self.to_refuse -= 1
                self.refused += 1
                return "451 4.3.0 try again later"
            self.messages.append((time.monotonic(), msg))  # type: ignore[arg-type]
        return "250 OK"

    def received(self) -> list[EmailMessage]:
        with self.lock:
            return [m for _, m in self.messages]

    def message_ids(self) -> Counter[str]:
        """How many times each Message-ID arrived (a batch sent twice shows as 2)."""
        with self.lock:
            return Counter(str(m["Message-ID"]) for _, m in self.messages)
