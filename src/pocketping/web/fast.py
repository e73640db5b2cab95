"""The widget's two hottest calls, ``POST /connect`` and ``POST /message``, and its WebSocket
``/stream``, answered straight from ASGI.

Every page view makes a ``/connect`` and every visitor message a ``/message``; going through
Starlette's router, exception layers and ``Request`` / ``JSONResponse`` objects costs more
than the work itself. :class:`FastLane` answers exactly these (they have no Starlette route),
with the JSON errors of :func:`~pocketping.web.parsing.error_of`, and hands everything else to
the Starlette app. CORS is one layer in front of both (see ``app.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from ..errors import PocketPingError
from ..models import compact_json, iso
from ..policy import Policy
from ..protocol import ConnectRequest, SendMessageRequest
from .console import PREFIX as CONSOLE
from .console import route_path
from .cors import Cors
from .parsing import discard_body, error_headers, error_of, parse_body, read_body
from .stream import stream_ws
from .uploads import for_visitor, origin_of
from .versions import version_headers

if TYPE_CHECKING:
    from ..core import PocketPing

log = logging.getLogger("pocketping.web")

Result = tuple[int, dict[str, Any], dict[str, str]]

VERSION_HEADERS = (
    "X-PocketPing-Version-Status",
    "X-PocketPing-Min-Version",
    "X-PocketPing-Latest-Version",
    "X-PocketPing-Version-Message",
)


#: Operator-side paths: platforms' webhooks and bridge callbacks. No browser page is meant to
#: call them, so they get no CORS headers; they have their own authentication.
OPERATOR_SIDE = ("/webhooks/", "/bridge/")
#: Paths the client filters and rate limits leave alone: the operator side, health checks, the
#: static script and the schema.
UNSCREENED = (*OPERATOR_SIDE, "/health", "/widget.js", "/openapi.json")


#: The request headers the front reads, scanned once per request.
WANTED = frozenset(
    {
        b"origin",
        b"x-pocketping-version",
        b"content-length",
        b"x-forwarded-for",
        b"x-real-ip",
        b"forwarded",
        b"user-agent",
        b"host",
    }
)


def headers_of(scope: Scope) -> dict[bytes, str]:
    """The :data:`WANTED` request headers (text) of ``scope``."""
    return {name: value.decode("latin-1") for name, value in scope["headers"] if name in WANTED}


def client_of(scope: Scope, headers: dict[bytes, str], policy: Policy) -> tuple[str | None, str | None]:
    """The client's address (see :meth:`Policy.client_ip`) and user agent."""
    peer = scope.get("client")
    forwarded = headers.get(policy.client_ip_header_key)
    if forwarded is None and policy.trusted_proxies:
        policy.check_other_headers(peer[0] if peer else None, headers)
    ip = policy.client_ip(peer[0] if peer else None, forwarded)
    return ip, headers.get(b"user-agent")


def _origin(headers: dict[bytes, str]) -> bytes | None:
    origin = headers.get(b"origin")
    return None if origin is None else origin.encode("latin-1")


async def connect_call(
    pp: PocketPing, body: bytes, widget_version: str | None, ip: str | None, origin: str = ""
) -> Result:
    req = parse_body(body, ConnectRequest)
    headers, status, text = version_headers(widget_version, pp.min_widget_version, pp.latest_widget_version)
    if status == "unsupported":
        detail = {"error": "widget_version_unsupported", "detail": text, "minVersion": pp.min_widget_version}
        return 426, detail, headers
    metadata = dict(req.metadata)
    metadata.pop("ip", None)  # the address is ours to say, never the client's
    if ip:
        metadata["ip"] = ip
    session, _created, messages = await pp.chat.connect(
        req.visitorId, req.sessionId or None, metadata, req.identity, client_ip=ip
    )
    out: dict[str, Any] = {
        "sessionId": session.id,
        "visitorId": req.visitorId,
        "operatorOnline": pp.operator_online,
        "operatorReachable": pp.chat.operator_reachable(),
        "messages": for_visitor([m.to_wire() for m in messages], origin),
    }
    if pp.welcome_message:
        out["welcomeMessage"] = pp.welcome_message
    if session.identity:
        out["identity"] = session.identity
    if pp.prechat_form:
        prechat = {"enabled": True, "required": False, "timing": "before-first-message", "fields": "email-or-phone"}
        prechat.update(pp.prechat_form)
        prechat["completed"] = bool(session.data.get("prechat"))
        out["preChatForm"] = prechat
    for key, value in (
        ("operatorName", pp.operator_name),
        ("operatorAvatar", pp.operator_avatar),
        ("primaryColor", pp.primary_color),
    ):
        if value:
            out[key] = value
    return 200, out, headers


async def message_call(pp: PocketPing, body: bytes, origin: str = "") -> Result:
    req = parse_body(body, SendMessageRequest)
    message = await pp.chat.visitor_message(req.sessionId, req.content, req.attachmentIds, req.replyTo)
    out: dict[str, Any] = {"messageId": message.id, "timestamp": iso(message.created_at)}
    if message.attachments:
        out["attachments"] = [a.to_wire() for a in message.attachments]
        for_visitor([out], origin)
    return 200, out, {}


class FastLane:
    """The front of the ASGI app: starts PocketPing on the first request when the host did not
    run its lifespan, sends ``/console*`` to the console (outside CORS: only same-origin pages
    may read it), answers the hot calls itself (with ``cors``'s headers) and hands the rest to
    ``app`` (the Starlette routes behind the :class:`~pocketping.web.cors.Cors` layer)."""

    def __init__(self, pp: PocketPing, app: Cors, console: ASGIApp) -> None:
        self.pp = pp
        self.app = app
        self.cors = app
        self.console = console
        self.policy = pp.chat.policy
        self.limiter = pp.chat.limiter
        # A stream lives for hours, and every layer it passes through keeps a frame alive
        # for that long.
        self.ws_endpoint = stream_ws(pp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if not self.pp.started:
            await self.pp.start()
        path = route_path(scope)
        if path.startswith(CONSOLE) and (len(path) == len(CONSOLE) or path[len(CONSOLE)] == "/"):
            await self.console(scope, receive, send)
            return
        if path.startswith(OPERATOR_SIDE):
            await self.cors.app(scope, receive, send)  # the routes, outside the CORS layer
            return
        hot = (kind == "http" and (path == "/connect" or path == "/message") and scope["method"] != "OPTIONS") or (
            kind == "websocket" and path == "/stream"
        )
        guarded = not path.startswith(UNSCREENED)
        screen = guarded and self.policy.screens
        count = guarded and self.limiter.requests
        headers = headers_of(scope) if hot or screen or count else {}
        if (screen or count) and not await self._admitted(scope, receive, send, headers, screen):
            return
        if not hot:
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await self._stream(scope, receive, send)
        elif scope["method"] == "POST":
            await self._answer(path, scope, receive, send, headers)
        else:
            refusal = {"error": "method_not_allowed", "detail": "Method Not Allowed"}
            await self._reply(send, _origin(headers), 405, refusal, ALLOW)

    async def _admitted(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, str], screen: bool
    ) -> bool:
        """Apply the client filters and count the request against ``requests_per_ip``; False
        when it was refused (and answered, its body read first so the connection stays in step)."""
        ip, user_agent = client_of(scope, headers, self.policy)
        try:
            if screen:
                self.policy.screen(ip, user_agent)
            await self.limiter.check_request(ip)
        except PocketPingError as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
                return False
            extra = error_headers(exc)
            if not await discard_body(receive):
                extra["Connection"] = "close"
            payload = {"error": exc.code, "detail": str(exc)}
            await self._reply(send, _origin(headers), exc.status_code, payload, extra)
            return False
        return True

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        try:
            await self.ws_endpoint(ws)
        except Exception:
            log.exception("websocket stream failed")
            if ws.application_state != WebSocketState.DISCONNECTED:
                await ws.close(code=1011)

    async def _answer(self, path: str, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, str]) -> None:
        try:
            body = await read_body(receive, headers.get(b"content-length"))
            origin = origin_of(scope, headers.get(b"host"))
            if path == "/connect":
                ip, _ = client_of(scope, headers, self.policy)
                version = headers.get(b"x-pocketping-version")
                status, payload, extra = await connect_call(self.pp, body, version, ip, origin)
            else:
                status, payload, extra = await message_call(self.pp, body, origin)
        except Exception as exc:
            status, payload = error_of(exc, f"POST {path}")
            extra = error_headers(exc)
        await self._reply(send, _origin(headers), status, payload, extra)

    async def _reply(
        self, send: Send, origin: bytes | None, status: int, payload: dict[str, Any], extra: dict[str, str]
    ) -> None:
        data = compact_json(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        for key, value in extra.items():
            headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))
        headers += self.cors.response_headers(origin)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


ALLOW = {"Allow": "POST"}
