"""Static assets (``/widget.js``) and the operator console (``/console``).

The console is a token-protected page plus a small JSON API built on the public PocketPing
API (``get_sessions``, ``get_messages``, ``send_message``, ``send_typing``, ``mark_read``,
``close_session``) and an SSE stream of the hub's all-sessions channel. It is dispatched
*before* the widget app's permissive CORS middleware, so browsers on other origins cannot
read its answers. ``PocketPing(console_token=None)`` (the default) disables it: 404.

The token is accepted as ``?token=`` (page and stream: a browser can send no header there),
``Authorization: Bearer <token>`` or ``X-PocketPing-Token``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from ..errors import AuthError, InvalidInput, PocketPingError
from ..models import Message, Session, iso
from ..protocol import load_object
from ..realtime.hub import ALL
from .parsing import BadRequest, error_response, read_body

if TYPE_CHECKING:
    from ..core import PocketPing

PREFIX = "/console"
CONSOLE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PocketPing console: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="console/console.css"></head>
<body class="login"><main><h1>PocketPing console</h1>
<p>This console needs its access token (the demo prints it as <code>token:</code>).</p>
<form method="get"><label for="token">Console token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></main></body></html>"""


@cache
def asset(name: str) -> tuple[bytes, str]:
    """The bytes of ``pocketping/static/<name>`` and their ETag (read once)."""
    data = files("pocketping").joinpath("static", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def asset_response(request: Request, name: str, media_type: str, headers: dict[str, str] | None = None) -> Response:
    data, etag = asset(name)
    head = {"ETag": etag, "Cache-Control": "public, max-age=300", **(headers or {})}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=head)
    return Response(data, media_type=media_type, headers=head)


async def widget_js(request: Request) -> Response:
    """``GET /widget.js``: our widget, one script tag (see ``static/widget.js``)."""
    return asset_response(request, "widget.js", "application/javascript; charset=utf-8")


def route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path and sets root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def _session_summary(session: Session, messages: list[Message]) -> dict[str, Any]:
    out = session.to_wire()
    out["unread"] = sum(1 for m in messages if m.sender == "visitor" and m.status != "read" and not m.deleted_at)
    last = next((m for m in reversed(messages) if not m.deleted_at), None)
    if last is not None:
        out["lastMessage"] = {"content": last.content[:200], "sender": last.sender, "timestamp": iso(last.created_at)}
    return out


def build_console_app(pp: PocketPing) -> ASGIApp:
    def token_of(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.headers.get("x-pocketping-token") or request.query_params.get("token") or ""

    def check(request: Request) -> bool:
        if not pp.console_token:
            raise HTTPException(404, "the operator console is disabled (set PocketPing(console_token=...))")
        given = token_of(request).encode()
        return hmac.compare_digest(given, pp.console_token.encode())

    def authorised(request: Request) -> None:
        if not check(request):
            raise AuthError("a valid console token is required")

    async def body(request: Request) -> dict[str, Any]:
        raw = await read_body(request.receive, request.headers.get("content-length"), 64 * 1024)
        try:
            return load_object(raw or b"{}")
        except ValueError as exc:
            raise InvalidInput(f"request body: {exc}") from None

    async def flag(request: Request, name: str, default: bool | None = None) -> bool:
        """The boolean ``name`` of the JSON body; :class:`InvalidInput` for anything else."""
        value = (await body(request)).get(name, default)
        if not isinstance(value, bool):
            raise InvalidInput(f"{name} must be true or false")
        return value

    async def page(request: Request) -> Response:
        if not check(request):
            return HTMLResponse(
                LOGIN_PAGE, status_code=401, headers={**CONSOLE_HEADERS, "Content-Security-Policy": PAGE_CSP}
            )
        data, _ = asset("console.html")
        return HTMLResponse(data, headers={**CONSOLE_HEADERS, "Content-Security-Policy": PAGE_CSP})

    async def console_js(request: Request) -> Response:
        if not pp.console_token:
            raise HTTPException(404)
        return asset_response(request, "console.js", "application/javascript; charset=utf-8")

    async def console_css(request: Request) -> Response:
        if not pp.console_token:
            raise HTTPException(404)
        return asset_response(request, "console.css", "text/css; charset=utf-8")

    async def sessions(request: Request) -> Response:
        authorised(request)
        include_closed = request.query_params.get("all") in ("1", "true")
        out = []
        for session in await pp.get_sessions(limit=100, include_closed=include_closed):
            out.append(_session_summary(session, await pp.get_messages(session.id)))
        return JSONResponse({"sessions": out, "operatorOnline": pp.operator_online}, headers=CONSOLE_HEADERS)

    async def conversation(request: Request) -> Response:
        authorised(request)
        sid = request.path_params["sid"]
        session = await pp.get_session(sid)
        messages = await pp.get_messages(sid)
        out: dict[str, Any] = {
            "session": _session_summary(session, messages),
            "messages": [m.to_wire() for m in messages],
        }
        if pp.ai is not None:
            state = await pp.ai.state(sid)
            out["ai"] = {"active": state.active, "reason": state.reason}
        return JSONResponse(out, headers=CONSOLE_HEADERS)

    async def ai(request: Request) -> Response:
        authorised(request)
        active = await flag(request, "active")
        await pp.set_ai(request.path_params["sid"], active)
        return JSONResponse({"active": active}, headers=CONSOLE_HEADERS)

    async def reply(request: Request) -> Response:
        authorised(request)
        data = await body(request)
        message = await pp.send_message(
            request.path_params["sid"], data.get("content"), type="operator", metadata={"source": "console"}
        )
        return JSONResponse({"message": message.to_wire()}, headers=CONSOLE_HEADERS)

    async def typing(request: Request) -> Response:
        authorised(request)
        await pp.send_typing(request.path_params["sid"], await flag(request, "isTyping", True))
        return JSONResponse({"ok": True}, headers=CONSOLE_HEADERS)

    async def read(request: Request) -> Response:
        authorised(request)
        ids = (await body(request)).get("messageIds")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidInput("messageIds must be a list of message ids")
        changed = await pp.mark_read(request.path_params["sid"], ids)
        return JSONResponse({"updated": len(changed)}, headers=CONSOLE_HEADERS)

    async def close(request: Request) -> Response:
        authorised(request)
        session = await pp.close_session(request.path_params["sid"])
        return JSONResponse({"session": session.to_wire()}, headers=CONSOLE_HEADERS)

    async def ban(request: Request) -> Response:
        authorised(request)
        banned = await flag(request, "banned", True)
        sid = request.path_params["sid"]
        session = await (pp.ban(sid) if banned else pp.unban(sid))
        return JSONResponse({"session": session.to_wire()}, headers=CONSOLE_HEADERS)

    async def presence(request: Request) -> Response:
        authorised(request)
        await pp.set_operator_online(await flag(request, "online"))
        return JSONResponse({"online": pp.operator_online}, headers=CONSOLE_HEADERS)

    async def stream(request: Request) -> Response:
        authorised(request)
        sub = pp.hub.subscribe(ALL)

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n: connected\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(sub.queue.get(), pp.sse_heartbeat)
                    except TimeoutError:
                        yield ": ping\n\n"
                        continue
                    if item is None or sub.overflowed:
                        return
                    yield f"data: {item[0]}\n\n"
            finally:
                pp.hub.unsubscribe(sub)

        headers = {**CONSOLE_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def slash(request: Request) -> Response:
        # Relative, and without the query: the token stays out of the next URL (and of the
        # logs and caches along the way), and the Host header chooses nothing.
        return Response(status_code=307, headers={"Location": "../console", "Cache-Control": "no-store"})

    async def on_error(request: Request, exc: Exception) -> Response:
        response = await error_response(request, exc)
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="pocketping-console"'
        response.headers.update(CONSOLE_HEADERS)
        return response

    api = PREFIX + "/api"
    routes = [
        Route(PREFIX, page, methods=["GET"]),
        Route(PREFIX + "/", slash, methods=["GET"]),
        Route(PREFIX + "/console.js", console_js, methods=["GET"]),
        Route(PREFIX + "/console.css", console_css, methods=["GET"]),
        Route(api + "/sessions", sessions, methods=["GET"]),
        Route(api + "/sessions/{sid}", conversation, methods=["GET"]),
        Route(api + "/sessions/{sid}/messages", reply, methods=["POST"]),
        Route(api + "/sessions/{sid}/typing", typing, methods=["POST"]),
        Route(api + "/sessions/{sid}/read", read, methods=["POST"]),
        Route(api + "/sessions/{sid}/close", close, methods=["POST"]),
        Route(api + "/sessions/{sid}/ban", ban, methods=["POST"]),
        Route(api + "/sessions/{sid}/ai", ai, methods=["POST"]),
        Route(api + "/presence", presence, methods=["POST"]),
        Route(api + "/stream", stream, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={PocketPingError: on_error, HTTPException: on_error, BadRequest: on_error},
    )
    app.router.redirect_slashes = False  # its redirects are absolute, built from the Host header
    return app
