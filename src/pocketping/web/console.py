"""Static assets (``/widget.js``) and the operator console (``/console``).

The console is a page plus a small JSON API built on the public PocketPing API and an SSE
stream of the hub's all-sessions channel. It is dispatched *before* the widget app's
permissive CORS middleware, so browsers on other origins cannot read its answers. It is on
when operator accounts exist (``pp.add_operator``) or ``console_token`` is set; 404 otherwise.

Signing in (``POST /console/signin``: a name and password, or the console token) sets an
HttpOnly, SameSite=Strict cookie (Secure on HTTPS) holding a random sign-in token; every
state-changing request made with that cookie must come from the console's own origin.
Scripts may instead send ``Authorization: Bearer <console_token>`` (or ``X-PocketPing-Token``).
``GET /console?token=<console_token>`` (the demo's printed address) signs in and redirects to
the address without the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
from collections.abc import AsyncIterator
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from ..errors import AuthError, Forbidden, InvalidInput, PocketPingError
from ..models import Message, Session, iso
from ..operators import SIGN_IN_DAYS, Operator
from ..protocol import load_object
from ..realtime.hub import ALL
from .parsing import BadRequest, error_response, read_body

if TYPE_CHECKING:
    from ..core import PocketPing

PREFIX = "/console"
CONSOLE_HEADERS = {
    "Cache-Control": "no-store",
    # Same-origin, not no-referrer: with no-referrer, browsers send "Origin: null" on the
    # console's own POSTs, and the Origin check could not tell them from a forged one.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
COOKIE = "pp_console"
LOGIN_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PocketPing console: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{base}/console.css"></head>
<body class="login"><main><h1>PocketPing console</h1>"""
ACCOUNT_FORM = """<form method="post" action="{base}/signin">
<label for="name">Name</label><input id="name" name="name" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>"""
TOKEN_FORM = """<p>This console needs its access token (the demo prints it as <code>token:</code>).</p>
<form method="post" action="{base}/signin"><label for="token">Console token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>"""


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
        # ``?token=`` on reads stays accepted for scripts written before sign-ins (an EventSource
        # cannot send headers); uvicorn's access log shows it as ``token=***``.
        query = request.query_params.get("token", "") if request.method == "GET" else ""
        return request.headers.get("x-pocketping-token") or query

    def token_matches(given: str) -> bool:
        return bool(pp.console_token) and hmac.compare_digest(given.encode(), str(pp.console_token).encode())

    async def enabled() -> None:
        if not pp.console_token and not await pp.operators.any():
            raise HTTPException(
                404, "the operator console is disabled (add an operator, or set PocketPing(console_token=...))"
            )

    def own_origin(request: Request) -> bool:
        """Whether a state-changing request comes from the console's own page."""
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            # A browser that sent no usable Origin still says where the request came from.
            return request.headers.get("sec-fetch-site") == "same-origin"
        allowed = {f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
        if pp.public_url:
            mount = urlsplit(pp.public_url)
            allowed.add(f"{mount.scheme}://{mount.netloc}".lower())
        return origin.lower().rstrip("/") in allowed

    async def authorised(request: Request) -> Operator:
        """Who is asking: a signed-in operator (cookie) or a script with the console token."""
        await enabled()
        given = token_of(request)
        if given:
            if token_matches(given):
                return Operator(pp.operator_name or "Operator", "admin")
            raise AuthError("a valid console token is required")
        operator = await pp.operators.signed_in(request.cookies.get(COOKIE))
        if operator is None:
            raise AuthError("sign in to the console first")
        if request.method not in ("GET", "HEAD") and not own_origin(request):
            raise Forbidden("this request must come from the console's own page (Origin)")
        return operator

    def login_page(request: Request, error: str | None = None, accounts: bool = True) -> Response:
        # Absolute paths: the page is also the answer of POST .../console/signin.
        base = html.escape(request.scope.get("root_path", "") + PREFIX, quote=True)
        parts = [LOGIN_HEAD.replace("{base}", base)]
        if error:
            parts.append(f'<p class="error" role="alert">{html.escape(error)}</p>')
        parts.append((ACCOUNT_FORM if accounts else TOKEN_FORM).replace("{base}", base))
        parts.append("</main></body></html>")
        status = 401
        return HTMLResponse(
            "".join(parts), status_code=status, headers={**CONSOLE_HEADERS, "Content-Security-Policy": PAGE_CSP}
        )

    def signed_in_response(request: Request, token: str, location: str) -> Response:
        response = Response(status_code=303, headers={"Location": location, "Cache-Control": "no-store"})
        path = request.scope.get("root_path", "") + PREFIX
        response.set_cookie(
            COOKIE,
            token,
            max_age=SIGN_IN_DAYS * 86400,
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def signin(request: Request) -> Response:
        await enabled()
        accounts = await pp.operators.any()
        if not own_origin(request):
            raise Forbidden("sign in from the console's own page (Origin)")
        raw = await read_body(request.receive, request.headers.get("content-length"), 16 * 1024)
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        from .fast import client_of, headers_of  # fast.py imports this module

        ip, _ = client_of(request.scope, headers_of(request.scope), pp.chat.policy)
        if "token" in form:
            pp.operators.check_attempt("console-token", ip or "")
            if not token_matches(form["token"]):
                return login_page(request, error="That token is not this console's.", accounts=False)
            operator = Operator(pp.operator_name or "Operator", "admin")
            token = await pp.operators.sign_in(operator, token_sign_in=True)
            return signed_in_response(request, token, "../console")
        name = form.get("name", "").strip()
        pp.operators.check_attempt(name, ip or "")
        found = await pp.operators.authenticate(name, form.get("password", ""))
        if found is None:
            return login_page(request, error="Wrong name or password.", accounts=accounts)
        token = await pp.operators.sign_in(found)
        return signed_in_response(request, token, "../console")

    async def signout(request: Request) -> Response:
        await authorised(request)
        await pp.operators.sign_out(request.cookies.get(COOKIE))
        response = Response(status_code=303, headers={"Location": "../console", "Cache-Control": "no-store"})
        response.delete_cookie(COOKIE, path=request.scope.get("root_path", "") + PREFIX)
        return response

    async def me(request: Request) -> Response:
        operator = await authorised(request)
        return JSONResponse({"operator": operator.to_wire()}, headers=CONSOLE_HEADERS)

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
        await enabled()
        given = request.query_params.get("token")
        if given is not None:  # the demo's printed address: sign in, then drop the token from the URL
            if not token_matches(given):
                return login_page(request, error="That token is not this console's.", accounts=False)
            token = await pp.operators.sign_in(Operator(pp.operator_name or "Operator", "admin"), token_sign_in=True)
            return signed_in_response(request, token, "console")
        if await pp.operators.signed_in(request.cookies.get(COOKIE)) is None:
            return login_page(request, accounts=await pp.operators.any())
        data, _ = asset("console.html")
        return HTMLResponse(data, headers={**CONSOLE_HEADERS, "Content-Security-Policy": PAGE_CSP})

    async def console_js(request: Request) -> Response:
        await enabled()
        return asset_response(request, "console.js", "application/javascript; charset=utf-8")

    async def console_css(request: Request) -> Response:
        await enabled()
        return asset_response(request, "console.css", "text/css; charset=utf-8")

    async def sessions(request: Request) -> Response:
        await authorised(request)
        include_closed = request.query_params.get("all") in ("1", "true")
        out = []
        for session in await pp.get_sessions(limit=100, include_closed=include_closed):
            out.append(_session_summary(session, await pp.get_messages(session.id)))
        return JSONResponse({"sessions": out, "operatorOnline": pp.operator_online}, headers=CONSOLE_HEADERS)

    async def conversation(request: Request) -> Response:
        await authorised(request)
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
        await authorised(request)
        active = await flag(request, "active")
        await pp.set_ai(request.path_params["sid"], active)
        return JSONResponse({"active": active}, headers=CONSOLE_HEADERS)

    async def reply(request: Request) -> Response:
        operator = await authorised(request)
        data = await body(request)
        message = await pp.send_message(
            request.path_params["sid"],
            data.get("content"),
            type="operator",
            metadata={"source": "console", "operatorName": operator.name},
        )
        return JSONResponse({"message": message.to_wire()}, headers=CONSOLE_HEADERS)

    async def typing(request: Request) -> Response:
        await authorised(request)
        await pp.send_typing(request.path_params["sid"], await flag(request, "isTyping", True))
        return JSONResponse({"ok": True}, headers=CONSOLE_HEADERS)

    async def read(request: Request) -> Response:
        await authorised(request)
        ids = (await body(request)).get("messageIds")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidInput("messageIds must be a list of message ids")
        changed = await pp.mark_read(request.path_params["sid"], ids)
        return JSONResponse({"updated": len(changed)}, headers=CONSOLE_HEADERS)

    async def close(request: Request) -> Response:
        await authorised(request)
        session = await pp.close_session(request.path_params["sid"])
        return JSONResponse({"session": session.to_wire()}, headers=CONSOLE_HEADERS)

    async def ban(request: Request) -> Response:
        await authorised(request)
        banned = await flag(request, "banned", True)
        sid = request.path_params["sid"]
        session = await (pp.ban(sid) if banned else pp.unban(sid))
        return JSONResponse({"session": session.to_wire()}, headers=CONSOLE_HEADERS)

    async def presence(request: Request) -> Response:
        await authorised(request)
        await pp.set_operator_online(await flag(request, "online"))
        return JSONResponse({"online": pp.operator_online}, headers=CONSOLE_HEADERS)

    async def stream(request: Request) -> Response:
        await authorised(request)
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
        Route(PREFIX + "/signin", signin, methods=["POST"]),
        Route(PREFIX + "/signout", signout, methods=["POST"]),
        Route(api + "/me", me, methods=["GET"]),
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
