"""The bridge server: ``/api/events`` (and the older convenience routes) in, platform threads
out, operator events back to the SDK's ``BACKEND_WEBHOOK_URL``.

Inside, it is a :class:`~pocketping.PocketPing` with its own storage (SQLite by default), which
mirrors the sessions and messages the SDK reports (same ids) so the bridge classes, the durable
outbox and the thread mapping work exactly as in-process. Operator messages that should reach
the SDK go through the same outbox, to :class:`BackendForwarder`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..bridges.base import Bridge
from ..bridges.remote import NO_KEY, auth_headers, check_auth
from ..core import PocketPing
from ..errors import BridgeError, Forbidden, MessageNotFound, PocketPingError, SessionNotFound
from ..models import Message, Session, compact_json, iso
from ..protocol import load_object
from ..redaction import protect
from ..web.parsing import BadRequest, bad_request, request_body, require_json
from .envelopes import WireMessage, WireSession, checked

log = logging.getLogger("pocketping.bridges")


class BackendForwarder(Bridge):
    """Sends operator events (replies, edits, deletes, closes) to the SDK's webhook."""

    name = "sdk"

    def __init__(self, backend_url: str, *, api_key: str | None = None) -> None:
        super().__init__()
        self.backend_url = backend_url
        self.api_key = api_key
        protect(api_key)

    def routes(self) -> list[Route]:
        return []

    async def deliver(self, job: dict[str, Any]) -> None:
        kind, sid = job["kind"], job["session_id"]
        found = await self.job_context(job)
        if found is None:
            return
        message = found[1]
        event: dict[str, Any] | None = None
        if message is not None and message.sender != "visitor":
            source = message.metadata.get("bridge")
            if kind == "operator":
                event = {
                    "type": "operator_message",
                    "sessionId": sid,
                    "messageId": message.id,
                    "content": message.content,
                    "sourceBridge": source,
                    "operatorName": message.metadata.get("operatorName"),
                }
            elif kind == "edit":
                edited = iso(message.edited_at or message.cursor)
                event = {"type": "operator_message_edited", "sessionId": sid, "messageId": message.id}
                event.update(content=message.content, editedAt=edited)
            elif kind == "delete":
                deleted = iso(message.deleted_at or message.cursor)
                event = {"type": "operator_message_deleted", "sessionId": sid, "messageId": message.id}
                event.update(deletedAt=deleted)
        elif kind == "close":
            event = {"type": "session_closed", "sessionId": sid, "sourceBridge": "bridge-server"}
        if event is not None:
            body = compact_json(event).encode()
            r = await self.request("POST", self.backend_url, content=body, headers=auth_headers(self.api_key, body))
            if r.status_code >= 300:
                raise BridgeError(f"backend answered HTTP {r.status_code} to {event['type']}", bridge=self.name)
        await self.job_done(job)


NO_SESSION: dict[str, Any] = {"session_id": None, "bridge": None}


class _UnknownEvent(Exception):
    pass


def build_bridge_server(
    bridges: Sequence[Bridge],
    *,
    backend_url: str | None = None,
    api_key: str | None = None,
    storage: Any = None,
    allow_unsigned: bool = False,
) -> tuple[Starlette, PocketPing]:
    """The bridge server's ASGI app and the PocketPing inside it. Without ``api_key`` every
    ``/api`` request is refused (401); with it, requests must carry the key and a fresh
    signature (the key alone with ``allow_unsigned``)."""
    if storage is None:
        from ..storage.sqlite import SQLiteStorage

        storage = SQLiteStorage("pocketping-bridge.db")
    if api_key is None:
        log.error("bridge server: %s", NO_KEY, extra=NO_SESSION)
    platform = list(bridges)
    forwarders: list[Bridge] = [BackendForwarder(backend_url, api_key=api_key)] if backend_url else []
    pp = PocketPing(storage=storage, bridges=[*platform, *forwarders])
    chat = pp.chat

    async def ensure_session(wire: Any) -> Session:
        return await chat.mirror_session(Session.from_mapping(checked(WireSession, wire, "session")))

    async def add_message(session: Session, wire: Any, sender: str) -> None:
        message = Message.from_mapping(checked(WireMessage, wire, "message"), session.id)
        message.sender = sender
        if sender != "visitor":
            message.metadata = {"bridge": "sdk", "operatorName": wire.get("operatorName") or "Operator"}
        await chat.mirror_message(session, message)

    async def change(event: Mapping[str, Any], content: str | None) -> None:
        """An edit (``content``) or a delete (None) the SDK reports; unknown or deleted
        messages are left alone."""
        sid, mid = str(event.get("sessionId") or ""), str(event.get("messageId") or "")
        try:
            if content is None:
                await chat.delete_message(sid, mid)
            else:
                await chat.edit_message(sid, mid, content)
        except (SessionNotFound, MessageNotFound, Forbidden) as exc:
            log.debug("bridge server: change not applied: %s", exc, extra={"session_id": sid, "bridge": None})

    async def apply(event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("new_session", "identity_update"):
            await ensure_session(event.get("session"))
        elif kind in ("visitor_message", "operator_message"):
            checked(WireMessage, event.get("message"), "message")  # both checked before either is stored
            session = await ensure_session(event.get("session"))
            await add_message(session, event.get("message"), "visitor" if kind == "visitor_message" else "operator")
        elif kind in ("visitor_message_edited", "operator_message_edited"):
            await change(event, str(event.get("content") or ""))
        elif kind in ("visitor_message_deleted", "operator_message_deleted"):
            await change(event, None)
        elif kind == "session_closed":
            sid = str(event.get("sessionId") or "")
            if await chat.find_session(sid) is not None:
                await chat.close_session(sid, source=BackendForwarder.name)
        elif kind in ("operator_status", "message_read", "custom_event", "ai_takeover", "csat_submitted", "disconnect"):
            log.debug("bridge server: %s noted", kind, extra={"session_id": event.get("sessionId"), "bridge": None})
        else:
            raise _UnknownEvent(kind)

    def endpoint(shape: str | None) -> Any:
        async def handle(request: Request) -> Response:
            if api_key is None:
                return JSONResponse({"error": "unauthorized", "detail": NO_KEY}, status_code=401)
            try:
                body = await request_body(request)
                if not check_auth(request.headers, body, api_key, allow_unsigned):
                    log.warning("bridge server: request refused (bad key or signature)", extra=NO_SESSION)
                    return JSONResponse({"error": "unauthorized", "detail": "bad key or signature"}, status_code=401)
                require_json(request)
            except BadRequest as exc:
                return bad_request(exc)
            try:
                data = load_object(body)
            except ValueError as exc:
                return JSONResponse({"error": "invalid_json", "detail": str(exc)}, status_code=400)
            if shape == "session":
                data = {"type": "new_session", "session": data}
            elif shape == "message":
                data = {"type": "visitor_message", **data}
            elif shape is not None:
                data = {"type": shape, **data}
            try:
                await apply(data)
            except _UnknownEvent as exc:
                return JSONResponse({"error": "unknown_event", "detail": f"unknown event type {exc}"}, status_code=400)
            except PocketPingError as exc:
                status = 400 if exc.status_code >= 500 else exc.status_code
                return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=status)
            return JSONResponse({"ok": True})

        return handle

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "bridges": [b.name for b in platform]})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/api/events", endpoint(None), methods=["POST"]),
        Route("/api/sessions", endpoint("session"), methods=["POST"]),
        Route("/api/messages", endpoint("message"), methods=["POST"]),
        Route("/api/operator/status", endpoint("operator_status"), methods=["POST"]),
        Route("/api/custom-events", endpoint("custom_event"), methods=["POST"]),
        Route("/api/disconnect", endpoint("disconnect"), methods=["POST"]),
        *(pp.bridge_hub.routes() if pp.bridge_hub is not None else []),
    ]
    return Starlette(routes=routes, lifespan=pp.lifespan), pp


def bridges_from_env(environ: Mapping[str, str] | None = None) -> list[Bridge]:
    """Every bridge whose ``POCKETPING_<PLATFORM>_BOT_TOKEN`` is set."""
    from ..bridges import DiscordBridge, SlackBridge, TelegramBridge

    env = os.environ if environ is None else environ
    found: list[Bridge] = []
    for prefix, cls in (("TELEGRAM", TelegramBridge), ("SLACK", SlackBridge), ("DISCORD", DiscordBridge)):
        if env.get(f"POCKETPING_{prefix}_BOT_TOKEN"):
            found.append(cls.from_env(env))
    return found
