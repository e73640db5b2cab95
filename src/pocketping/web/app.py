"""The ASGI app: the widget protocol's HTTP endpoints (see ``stream.py`` for real time)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import InvalidInput, PocketPingError
from ..models import iso
from ..protocol import (
    CsatRequest,
    EditMessageRequest,
    IdentifyRequest,
    PreChatRequest,
    ReadRequest,
    SessionOnlyRequest,
    TypingRequest,
)
from .console import build_console_app, widget_js
from .cors import Cors
from .email import email_routes
from .fast import VERSION_HEADERS, FastLane
from .openapi import openapi_document
from .parsing import BadRequest, error_response, parse, parse_cursor
from .stream import stream_http
from .uploads import for_visitor, origin_of, upload_routes

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
    # POST /connect, POST /message and WebSocket /stream are answered by FastLane.
    chat = pp.chat

    async def get_messages(request: Request) -> Response:
        sid = query_session_id(request)
        cursor = parse_cursor(request.query_params.get("after"))
        limit_text = request.query_params.get("limit")
        limit = 500
        if limit_text:
            if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 1000:
                raise InvalidInput("limit must be an integer between 1 and 1000")
            limit = int(limit_text)
        await chat.visitor_session(sid)
        if cursor is None:
            messages = await chat.catch_up(sid, None, limit + 1)
        else:
            # The official widget's cursor includes the readAt it sets with its own clock once
            # its /read succeeds. A change made between its last poll and that /read carries an
            # earlier stamp and would never be returned; the read receipt re-stamped those
            # messages, so messages read within READ_RACE_WINDOW before the cursor come back
            # too (the widget merges repeats by id).
            floor = cursor - READ_RACE_WINDOW
            messages = []
            since = floor
            while len(messages) <= limit:  # pages from the storage: a poll costs one page, not the history
                page = await chat.catch_up(sid, since, limit + 1)
                messages += [m for m in page if m.cursor > cursor or (m.read_at is not None and m.read_at > floor)]
                if len(page) <= limit:
                    break
                since = page[-1].cursor
            messages = messages[: limit + 1]
        wire = for_visitor(
            [m.to_wire() for m in messages[:limit]], origin_of(request.scope, request.headers.get("host"))
        )
        return JSONResponse({"messages": wire, "hasMore": len(messages) > limit})

    async def edit_message(request: Request) -> Response:
        req = await parse(request, EditMessageRequest)
        mid = request.path_params["message_id"]
        message = await chat.edit_message(req.sessionId, mid, req.content.strip(), by_visitor=True)
        assert message.edited_at is not None
        return JSONResponse(
            {"message": {"id": message.id, "content": message.content, "editedAt": iso(message.edited_at)}}
        )

    async def delete_message(request: Request) -> Response:
        sid = query_session_id(request)
        await chat.delete_message(sid, request.path_params["message_id"], by_visitor=True)
        return JSONResponse({"deleted": True})

    async def typing(request: Request) -> Response:
        req = await parse(request, TypingRequest)
        if req.sender not in (None, "visitor"):
            raise InvalidInput("sender must be 'visitor'")
        await chat.visitor_typing(req.sessionId, req.isTyping)
        return JSONResponse({"ok": True})

    async def read(request: Request) -> Response:
        req = await parse(request, ReadRequest)
        changed = await chat.mark_read(req.sessionId, req.messageIds, req.status, by_visitor=True)
        return JSONResponse({"updated": len(changed)})

    async def identify(request: Request) -> Response:
        req = await parse(request, IdentifyRequest)
        await chat.identify(req.sessionId, req.identity)
        return JSONResponse({"ok": True})

    async def prechat(request: Request) -> Response:
        req = await parse(request, PreChatRequest)
        await chat.save_prechat(req.sessionId, req.model_dump(exclude_none=True, exclude={"sessionId"}))
        return JSONResponse({"ok": True})

    async def csat(request: Request) -> Response:
        req = await parse(request, CsatRequest)
        if not await chat.rate(req.sessionId, req.score, req.comment):
            return JSONResponse({"ok": True, "alreadyRated": True})
        return JSONResponse({"ok": True})

    async def beacon(request: Request) -> Response:
        # /disconnect and /visibility: sent by sendBeacon, whatever the Content-Type.
        req = await parse(request, SessionOnlyRequest)
        await chat.visitor_session(req.sessionId)
        return JSONResponse({"ok": True})

    async def screenshot_requests(request: Request) -> Response:
        query_session_id(request)
        return JSONResponse({"requests": []})

    async def openapi(request: Request) -> Response:
        # Paths are relative to the mount, wherever the host app put it.
        mount = request.scope.get("root_path", "").rstrip("/") or "/"
        return JSONResponse({**openapi_document(), "servers": [{"url": mount}]})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "storage": type(pp.storage).__name__,
                "streams": pp.hub.count(),
            }
        )

    routes = [
        Route("/message/{message_id}", edit_message, methods=["PATCH"]),
        Route("/message/{message_id}", delete_message, methods=["DELETE"]),
        Route("/messages", get_messages, methods=["GET"]),
        *(
            Route(path, endpoint, methods=[method])
            for method, path, endpoint in (
                ("POST", "/typing", typing),
                ("POST", "/read", read),
                ("POST", "/identify", identify),
                ("POST", "/prechat", prechat),
                ("POST", "/csat", csat),
                ("POST", "/disconnect", beacon),
                ("POST", "/visibility", beacon),
                ("GET", "/screenshot/requests", screenshot_requests),
                ("GET", "/health", health),
                ("GET", "/openapi.json", openapi),
                ("GET", "/widget.js", widget_js),
                ("GET", "/stream", stream_http(pp)),
            )
        ),
        *upload_routes(pp),
        *(pp.bridge_hub.routes() if pp.bridge_hub is not None else []),
        *(email_routes(pp.email) if pp.email is not None else []),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            PocketPingError: error_response,
            BadRequest: error_response,
            HTTPException: error_response,
            Exception: error_response,
        },
        lifespan=pp.lifespan,
    )
    # One CORS layer for the fast lane and the routes; the console is dispatched before it:
    # only same-origin pages may read it.
    return FastLane(pp, Cors(Contained(app), pp.allowed_origins, expose=VERSION_HEADERS), build_console_app(pp))


class Contained:
    """Starlette answers an unexpected error with its 500 handler (JSON here) and then raises
    it again for the server, which drops the keep-alive connection and the client's next
    request on it. An error that was already answered stops here; it was logged by
    :func:`~pocketping.web.parsing.error_of`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def tracked(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if not answered:
                raise
