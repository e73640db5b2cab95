"""The ASGI app: the widget protocol's HTTP endpoints (see ``stream.py`` for real time)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..errors import InvalidInput, PocketPingError
from ..models import Event, iso, parse_time
from ..protocol import (
    CsatRequest,
    EditMessageRequest,
    IdentifyRequest,
    PreChatRequest,
    ReadRequest,
    SessionOnlyRequest,
    TypingRequest,
)
from .console import ConsoleSplit, build_console_app, widget_js
from .fast import VERSION_HEADERS, FastLane, client_ip, connect_call, message_call
from .parsing import _BadRequest, error, parse
from .stream import stream_http, stream_ws
from .uploads import upload_routes

if TYPE_CHECKING:
    from ..core import PocketPing

log = logging.getLogger("pocketping.web")

READ_RACE_WINDOW = timedelta(seconds=30)


def query_session_id(request: Request) -> str:
    sid = request.query_params.get("sessionId", "").strip()
    if not sid:
        raise InvalidInput("query parameter sessionId is required")
    return sid


def build_asgi_app(pp: PocketPing) -> ASGIApp:
    # The same code FastLane runs for these two; kept as routes for the inner app alone.
    async def connect(request: Request) -> Response:
        ip = client_ip(
            request.headers.get("x-forwarded-for"),
            request.headers.get("x-real-ip"),
            request.client.host if request.client else None,
        )
        status, body, headers = await connect_call(
            pp, await request.body(), request.headers.get("x-pocketping-version"), ip
        )
        return JSONResponse(body, status_code=status, headers=headers)

    async def send_message(request: Request) -> Response:
        status, body, headers = await message_call(pp, await request.body())
        return JSONResponse(body, status_code=status, headers=headers)

    async def get_messages(request: Request) -> Response:
        sid = query_session_id(request)
        after = request.query_params.get("after") or None
        if after is not None:
            try:
                parse_time(after)
            except ValueError:
                raise InvalidInput(f"after must be an ISO-8601 timestamp, not {after!r}") from None
        limit_text = request.query_params.get("limit")
        limit = 500
        if limit_text:
            if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
                raise InvalidInput("limit must be an integer between 1 and 1000")
            limit = int(limit_text)
        if after is None:
            messages = await pp.get_messages(sid, limit=limit + 1)
        else:
            # The official widget's cursor includes the readAt it sets with its own clock once
            # its /read succeeds. A change made between its last poll and that /read carries an
            # earlier stamp and would never be returned; the read receipt re-stamped those
            # messages, so messages read within READ_RACE_WINDOW before the cursor come back
            # too (the widget merges repeats by id).
            cursor = parse_time(after)
            floor = cursor - READ_RACE_WINDOW
            found = await pp.get_messages(sid, after=floor)
            messages = [m for m in found if m.cursor > cursor or (m.read_at is not None and m.read_at > floor)]
            messages = messages[: limit + 1]
        return JSONResponse({"messages": [m.to_wire() for m in messages[:limit]], "hasMore": len(messages) > limit})

    async def edit_message(request: Request) -> Response:
        req = await parse(request, EditMessageRequest)
        content = pp._check_content(req.content.strip())
        await pp._session(req.sessionId)
        message = await pp._edit(req.sessionId, request.path_params["message_id"], content, visitor=True)
        assert message.edited_at is not None
        return JSONResponse(
            {"message": {"id": message.id, "content": message.content, "editedAt": iso(message.edited_at)}}
        )

    async def delete_message(request: Request) -> Response:
        sid = query_session_id(request)
        await pp._session(sid)
        await pp._delete(sid, request.path_params["message_id"], visitor=True)
        return JSONResponse({"deleted": True})

    async def typing(request: Request) -> Response:
        req = await parse(request, TypingRequest)
        if req.sender not in (None, "visitor"):
            raise InvalidInput("sender must be 'visitor'")
        await pp._visitor_typing(req.sessionId, req.isTyping)
        return JSONResponse({"ok": True})

    async def read(request: Request) -> Response:
        req = await parse(request, ReadRequest)
        await pp._session(req.sessionId)
        changed = await pp._mark(req.sessionId, req.messageIds, req.status, senders={"operator", "ai", "system"})
        return JSONResponse({"updated": len(changed)})

    async def identify(request: Request) -> Response:
        req = await parse(request, IdentifyRequest)
        uid = req.identity.get("id")
        if not isinstance(uid, str) or not uid.strip():
            raise InvalidInput("identity.id is required and must be a non-empty string")
        session = await pp._session(req.sessionId)
        session.identity = req.identity
        await pp.storage.update_session(session)
        return JSONResponse({"ok": True})

    async def prechat(request: Request) -> Response:
        req = await parse(request, PreChatRequest)
        if not req.email and not req.phone:
            raise InvalidInput("give an email or a phone number")
        if req.email and ("@" not in req.email or req.email.startswith("@") or req.email.endswith("@")):
            raise InvalidInput("email is not a valid address")
        session = await pp._session(req.sessionId)
        session.data["prechat"] = req.model_dump(exclude_none=True, exclude={"sessionId"})
        await pp.storage.update_session(session)
        return JSONResponse({"ok": True})

    async def csat(request: Request) -> Response:
        req = await parse(request, CsatRequest)
        session = await pp._session(req.sessionId)
        if "csat" in session.data:
            return JSONResponse({"ok": True, "alreadyRated": True})
        rating: dict[str, Any] = {"score": req.score}
        if req.comment and req.comment.strip():
            rating["comment"] = req.comment.strip()
        session.data["csat"] = rating
        await pp.storage.update_session(session)
        await pp._widget_event(session, Event("csat", rating, session_id=session.id))
        return JSONResponse({"ok": True})

    async def beacon(request: Request) -> Response:
        # /disconnect and /visibility: sent by sendBeacon, whatever the Content-Type.
        req = await parse(request, SessionOnlyRequest)
        await pp._session(req.sessionId)
        return JSONResponse({"ok": True})

    async def screenshot_requests(request: Request) -> Response:
        query_session_id(request)
        return JSONResponse({"requests": []})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "storage": type(pp.storage).__name__,
                "streams": pp.hub.count(),
            }
        )

    async def on_pocketping_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PocketPingError)
        if exc.status_code >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        return error(exc.status_code, exc.code, str(exc))

    async def on_bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _BadRequest)
        return exc.response

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, exc.detail)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal_error", "the server failed to handle this request")

    routes = [
        Route("/connect", connect, methods=["POST"]),
        Route("/message", send_message, methods=["POST"]),
        Route("/message/{message_id}", edit_message, methods=["PATCH"]),
        Route("/message/{message_id}", delete_message, methods=["DELETE"]),
        Route("/messages", get_messages, methods=["GET"]),
        Route("/typing", typing, methods=["POST"]),
        Route("/read", read, methods=["POST"]),
        Route("/identify", identify, methods=["POST"]),
        Route("/prechat", prechat, methods=["POST"]),
        Route("/csat", csat, methods=["POST"]),
        Route("/disconnect", beacon, methods=["POST"]),
        Route("/visibility", beacon, methods=["POST"]),
        Route("/screenshot/requests", screenshot_requests, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/widget.js", widget_js, methods=["GET"]),
        Route("/stream", stream_http(pp), methods=["GET"]),
        WebSocketRoute("/stream", stream_ws(pp)),
        *upload_routes(pp),
        *(pp._bridges.routes() if pp._bridges is not None else []),
    ]
    origins = pp.allowed_origins
    cors: dict[str, Any] = (
        {"allow_origin_regex": ".*"}
        if origins == "*"
        else {"allow_origins": [origins] if isinstance(origins, str) else list(origins)}
    )
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_credentials=True,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["Content-Type", "X-PocketPing-Version"],
                expose_headers=VERSION_HEADERS,
                max_age=86400,
                **cors,
            )
        ],
        exception_handlers={
            PocketPingError: on_pocketping_error,
            _BadRequest: on_bad_request,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
        lifespan=pp.lifespan,
    )
    # The console is dispatched outside the CORS middleware: only same-origin pages may read it.
    return _LazyStart(pp, FastLane(pp, ConsoleSplit(build_console_app(pp), app), origins))


class _LazyStart:
    """Starts PocketPing on the first request when the host did not run its lifespan."""

    def __init__(self, pp: PocketPing, app: ASGIApp) -> None:
        self.pp = pp
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and not self.pp._started:
            await self.pp.start()
        await self.app(scope, receive, send)
