"""``bridge_url`` mode: the SDK forwards events to a bridge server (``pocketping bridge`` or
another one speaking the same API) and receives operator events back at
``<mount>/bridge/webhook``.

Outgoing: ``POST {bridge_url}/api/events`` with a typed envelope (``new_session``,
``visitor_message``, ``visitor_message_edited``, ``visitor_message_deleted``, plus our
``operator_message`` and ``session_closed``), through the same durable outbox as the in-process
bridges. Both directions carry ``Authorization: Bearer <api key>`` when a key is set, and a
timestamped signature ``X-PocketPing-Signature: t=<unix>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>``,
required (``allow_unsigned=True`` accepts the Bearer key alone, for peers that do not sign yet)
within a 5-minute window. Without a key nothing is accepted: the callbacks fail closed.
Incoming operator events are deduplicated by ``messageId``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BridgeError, PocketPingError
from ..models import compact_json, iso
from ..redaction import protect
from .base import REPLAY_WINDOW, Bridge

log = logging.getLogger("pocketping.bridges")

SIGNATURE_HEADER = "X-PocketPing-Signature"


def sign(key: str, body: bytes, at: float | None = None) -> str:
    t = str(int(time.time() if at is None else at))
    mac = hmac.new(key.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


#: The variable holding the key both sides share, and how to make one.
KEY_VARIABLE = "POCKETPING_BRIDGE_API_KEY"
MAKE_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
NO_KEY = (
    f"{KEY_VARIABLE} is not set, so every bridge callback is refused: set it to the same random key on the "
    f"web app and on the bridge server (make one with: {MAKE_KEY})"
)


def check_auth(headers: Mapping[str, str], body: bytes, key: str | None, allow_unsigned: bool = False) -> bool:
    """The Bearer key and the timestamped signature (the key alone with ``allow_unsigned``).
    Without a key, nothing passes."""
    if key is None:
        return False
    if not hmac.compare_digest(headers.get("authorization", "").encode(), f"Bearer {key}".encode()):
        return False
    header = headers.get(SIGNATURE_HEADER.lower())
    if header is None:
        return allow_unsigned
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        if abs(time.time() - int(parts.get("t", ""))) > REPLAY_WINDOW:
            return False
    except ValueError:
        return False
    expected = sign(key, body, int(parts["t"]))
    return hmac.compare_digest(expected.encode(), header.encode())


def env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes")


def auth_headers(key: str | None, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "pocketping-python/0.1"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
        headers[SIGNATURE_HEADER] = sign(key, body)
    return headers


class RemoteBridge(Bridge):
    """The SDK side of ``bridge_url``: ``PocketPing(bridge_url=...)`` adds one (:meth:`for_url`), reading the
    shared key from ``POCKETPING_BRIDGE_API_KEY``."""

    name = "remote"

    def __init__(self, bridge_url: str, *, api_key: str | None = None, allow_unsigned: bool = False) -> None:
        super().__init__()
        self.bridge_url = bridge_url.rstrip("/")
        self.api_key = api_key or None
        protect(self.api_key)
        self.allow_unsigned = allow_unsigned

    def __repr__(self) -> str:
        return f"RemoteBridge({self.bridge_url!r})"

    @classmethod
    def for_url(cls, bridge_url: str, environ: Mapping[str, str] | None = None) -> RemoteBridge:
        """Key from ``POCKETPING_BRIDGE_API_KEY``; ``POCKETPING_BRIDGE_ALLOW_UNSIGNED=1`` accepts
        callbacks that carry the key without a signature (older bridge servers)."""
        import os

        env = os.environ if environ is None else environ
        return cls(
            bridge_url,
            api_key=env.get(KEY_VARIABLE) or None,
            allow_unsigned=env_flag(env, "POCKETPING_BRIDGE_ALLOW_UNSIGNED"),
        )

    async def start(self, hub: Any) -> None:
        await super().start(hub)
        if self.api_key is None:
            log.error("bridge_url: %s", NO_KEY, extra=self._log_extra(None))

    def routes(self) -> list[Route]:
        return [Route("/bridge/webhook", self.webhook, methods=["POST"])]

    async def send_event(self, event: dict[str, Any]) -> None:
        body = compact_json(event).encode()
        r = await self.request(
            "POST", f"{self.bridge_url}/api/events", content=body, headers=auth_headers(self.api_key, body)
        )
        if r.status_code == 400 and event["type"] in ("operator_message", "session_closed"):
            log.debug("bridge server does not know %s events", event["type"], extra=self._log_extra(None))
            return
        if r.status_code >= 300:
            raise BridgeError(f"{event['type']}: HTTP {r.status_code} {r.text[:200]}", bridge=self.name)

    async def deliver(self, job: dict[str, Any]) -> None:
        kind, sid = job["kind"], job["session_id"]
        found = await self.job_context(job)
        if found is None:
            return
        session, message = found
        event: dict[str, Any] | None = None
        if kind == "open":
            event = {"type": "new_session", "session": session.to_wire()}
        elif kind == "message" and message is not None and message.deleted_at is None:
            event = {"type": "visitor_message", "message": message.to_wire(), "session": session.to_wire()}
        elif kind == "operator" and message is not None and message.deleted_at is None:
            event = {"type": "operator_message", "message": message.to_wire(), "session": session.to_wire()}
            event["message"]["operatorName"] = message.metadata.get("operatorName")
        elif kind == "edit" and message is not None:
            event = {
                "type": "visitor_message_edited" if message.sender == "visitor" else "operator_message_edited",
                "sessionId": sid,
                "messageId": message.id,
                "content": message.content,
                "editedAt": iso(message.edited_at or message.cursor),
            }
        elif kind == "delete" and message is not None:
            event = {
                "type": "visitor_message_deleted" if message.sender == "visitor" else "operator_message_deleted",
                "sessionId": sid,
                "messageId": message.id,
                "deletedAt": iso(message.deleted_at or message.cursor),
            }
        elif kind == "close":
            event = {"type": "session_closed", "sessionId": sid, "session": session.to_wire()}
        elif kind == "csat":
            event = {"type": "csat_submitted", "sessionId": sid, "rating": job["payload"].get("rating") or {}}
        if event is not None:
            await self.send_event(event)
        await self.job_done(job)

    # -- operator events from the bridge server ---------------------------------------------

    async def webhook(self, request: Request) -> Response:
        if self.api_key is None:
            return JSONResponse({"error": "unauthorized", "detail": NO_KEY}, status_code=401)
        event = await self.verified_object(
            request,
            lambda headers, body: check_auth(headers, body, self.api_key, self.allow_unsigned),
            JSONResponse({"error": "unauthorized", "detail": "bad key or signature"}, status_code=401),
            json_only=True,
        )
        if isinstance(event, Response):
            return event
        try:
            await self.handle_event(event)
        except PocketPingError as exc:
            log.warning("bridge event %s not applied: %s", event.get("type"), exc, extra=self._log_extra(None))
            return JSONResponse({"error": str(exc)}, status_code=exc.status_code if exc.status_code < 500 else 500)
        return JSONResponse({"ok": True})

    async def _session_id(self, event: Mapping[str, Any]) -> str | None:
        sid = event.get("sessionId")
        if isinstance(sid, str) and await self.pp.chat.find_session(sid) is not None:
            return sid
        return None

    async def handle_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        sid = await self._session_id(event)
        message_id = str(event.get("messageId") or "")
        if kind == "operator_message" and sid is not None:
            digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:24]
            key = message_id or f"event:{digest}"
            if not await self.first_time(key):
                return
            try:
                message = await self.pp.send_message(
                    sid,
                    str(event.get("content") or ""),
                    type="operator",
                    metadata={
                        "bridge": self.name,
                        "sourceBridge": event.get("sourceBridge"),
                        "bridgeMessageId": message_id or None,
                        "operatorName": event.get("operatorName") or "Operator",
                    },
                )
            except Exception:
                await self.forget_update(key)
                raise
            if message_id:
                await self.store.bridge_key_set(f"{self.name}:in:{message_id}", f"{sid} {message.id}", session_id=sid)
            if not self.pp.operator_online:
                await self.pp.set_operator_online(True)
        elif kind == "operator_message_edited" and message_id:
            await self.operator_edit(message_id, str(event.get("content") or ""))
        elif kind == "operator_message_deleted" and message_id:
            await self.operator_delete(message_id)
        elif kind == "session_closed" and sid is not None:
            await self.pp.close_session(sid)
        elif kind == "operator_status" and isinstance(event.get("online"), bool):
            await self.pp.set_operator_online(event["online"])
        else:
            log.debug("bridge event %s ignored", kind, extra=self._log_extra(sid))
