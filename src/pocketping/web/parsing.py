"""Request parsing and JSON errors: the one place every endpoint (Starlette routes and the
fast lane alike) turns an exception into ``{"error": <code>, "detail": ...}`` with its status."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive

from ..errors import InvalidInput, PocketPingError, RateLimited
from ..models import parse_time

log = logging.getLogger("pocketping.web")

M = TypeVar("M", bound=BaseModel)

MAX_BODY = 256 * 1024


def error(status: int, code: str, detail: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def error_of(exc: Exception, where: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body answering ``exc`` (``where``: the request, for the log)."""
    if isinstance(exc, BadRequest):
        return exc.status, {"error": exc.code, "detail": exc.detail}
    if isinstance(exc, PocketPingError):
        if exc.status_code >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        return exc.status_code, {"error": exc.code, "detail": str(exc)}
    if isinstance(exc, HTTPException):
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return exc.status_code, {"error": code, "detail": exc.detail}
    log.error("unexpected error on %s", where, exc_info=exc)
    return 500, {"error": "internal_error", "detail": "the server failed to handle this request"}


def error_headers(exc: Exception) -> dict[str, str]:
    """Headers an error answer needs besides its body."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    return {"Connection": "close"} if isinstance(exc, BadRequest) and exc.close else {}


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """A Starlette exception handler built on :func:`error_of`."""
    status, body = error_of(exc, f"{request.method} {request.url.path}")
    return JSONResponse(body, status_code=status, headers=error_headers(exc))


async def parse(request: Request, model: type[M]) -> M:
    return parse_body(await read_body(request.receive, request.headers.get("content-length")), model)


async def read_body(receive: Receive, declared: str | None = None, limit: int = MAX_BODY) -> bytes:
    """The request body, up to ``limit`` bytes. Past it (or when ``Content-Length`` says so), a
    413: the rest is read and thrown away (up to :data:`DRAIN_LIMIT`), so that a keep-alive
    connection stays in step under every server, and the answer asks to close it."""
    too_large = BadRequest(413, "body_too_large", f"request body over {limit} bytes", close=True)
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DRAIN_LIMIT:  # small enough to read past: the connection stays usable
            await discard_body(receive)
        raise too_large  # else answered at once; the answer closes the connection
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away
        chunk = message.get("body", b"")
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit:
            await discard_body(receive, more)
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


#: How much of an oversized body is read and discarded before giving up on the connection.
DRAIN_LIMIT = 16 * 1024 * 1024


async def discard_body(receive: Receive, more: bool = True) -> bool:
    """Read and throw away the rest of a request body, up to :data:`DRAIN_LIMIT` bytes; False
    when some is left unread (the answer must then close the connection)."""
    drained = 0
    while more and drained < DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return True
        drained += len(message.get("body", b""))
        more = message.get("more_body", False)
    return not more


#: Largest body of an operator-side request: platform webhooks, bridge callbacks, the console API.
OPERATOR_MAX_BODY = 1024 * 1024


async def request_body(request: Request, *, limit: int = OPERATOR_MAX_BODY) -> bytes:
    """The body of an operator-side request, up to ``limit`` bytes (:class:`BadRequest` 413
    beyond)."""
    return await read_body(request.receive, request.headers.get("content-length"), limit)


def require_json(request: Request) -> None:
    """:class:`BadRequest` 415 unless the request says ``Content-Type: application/json`` (a
    foreign page can post ``text/plain`` from a visitor's browser without a preflight)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise BadRequest(415, "unsupported_media_type", "send Content-Type: application/json")


def bad_request(exc: BadRequest) -> JSONResponse:
    """The answer to a :class:`BadRequest`."""
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=error_headers(exc))


def parse_cursor(value: str | None, name: str = "after") -> datetime | None:
    """A change cursor from a query parameter or ``Last-Event-ID``; :class:`InvalidInput`
    saying what is wrong with one we cannot use (not ISO-8601, out of range)."""
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {exc}") from None


def parse_body(body: bytes, model: type[M]) -> M:
    """Validate a JSON request body; :class:`BadRequest` (400/413) naming what is wrong."""
    if len(body) > MAX_BODY:
        raise BadRequest(413, "body_too_large", f"request body over {MAX_BODY} bytes")
    if not body.strip():
        raise BadRequest(400, "invalid_json", "request body is empty; expected a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False, include_context=False)
        invalid = [e for e in errs if e["type"] == "json_invalid"]
        if invalid:  # say what: "recursion limit exceeded", "number out of range", ...
            what = str(invalid[0]["msg"]).removeprefix("Invalid JSON: ")
            raise BadRequest(400, "invalid_json", f"request body is not valid JSON: {what}") from None
        if any(e["type"] == "model_type" and not e["loc"] for e in errs):
            raise BadRequest(400, "invalid_json", "request body must be a JSON object") from None
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in errs]
        raise BadRequest(400, "invalid_input", detail) from None


class BadRequest(Exception):
    """A request refused before it reached the chat service. ``close``: the answer ends the
    connection (part of the body was left unread)."""

    def __init__(self, status: int, code: str, detail: Any, *, close: bool = False) -> None:
        super().__init__(code)
        self.status, self.code, self.detail, self.close = status, code, detail, close
