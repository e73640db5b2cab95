"""Attachment uploads: ``POST /upload`` → ``PUT /upload/{id}`` → ``POST /upload/complete``,
and ``GET /attachments/{id}`` to read them back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from ..files import INLINE_TYPES, UPLOAD_TTL_MS
from ..models import from_ms, iso, now_ms
from ..protocol import CompleteRequest, UploadRequest
from .parsing import parse, read_body

if TYPE_CHECKING:
    from ..core import PocketPing


def _base(request: Request) -> str:
    """The mount's absolute URL as this request sees it (``http://host/pocketping``): for
    answers to the requesting visitor only, since its host comes from the request."""
    root = request.scope.get("root_path", "").rstrip("/")
    return str(request.url.replace(path=root, query="", fragment="")).rstrip("/")


def stored_url(pp: PocketPing, request: Request, attachment_id: str) -> str:
    """The URL kept with an attachment, which operators see: from ``public_url``, or the
    path under the mount; never from the request's Host header, which the visitor chooses."""
    if pp.public_url:
        return f"{pp.public_url}/attachments/{attachment_id}"
    return f"{request.scope.get('root_path', '').rstrip('/')}/attachments/{attachment_id}"


def origin_of(scope: Scope, host: str | None) -> str:
    """``scheme://host`` of a request, for answers to that requester only."""
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host}"


def for_visitor(messages: list[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    """Wire messages whose attachment links (stored as paths without ``public_url``) are made
    absolute for the requesting visitor, whose widget may run on another origin."""
    if not origin:
        return messages
    for m in messages:
        for a in m.get("attachments", ()):
            if a.get("url", "").startswith("/"):
                a["url"] = origin + a["url"]
    return messages


class Download(FileResponse):
    """A stored file, or a 404 when it is erased before its first byte is sent (an erasure
    racing the download); one erased while it is sent ends the transfer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await super().__call__(scope, receive, tracked)
        except (RuntimeError, FileNotFoundError):
            if started:
                raise
            gone = JSONResponse({"error": "not_found", "detail": "no such attachment"}, status_code=404)
            await gone(scope, receive, send)


def upload_routes(pp: PocketPing) -> list[Route]:
    async def start(request: Request) -> Response:
        req = await parse(request, UploadRequest)
        meta = await pp.chat.start_upload(req.sessionId, req.filename, req.mimeType, req.size)
        # A file store of your own may not say when an upload expires: the default then.
        expires = from_ms(meta["expires_ms"]) if "expires_ms" in meta else from_ms(now_ms() + UPLOAD_TTL_MS)
        return JSONResponse(
            {
                "attachmentId": meta["id"],
                "uploadUrl": f"{_base(request)}/upload/{meta['id']}",
                "expiresAt": iso(expires),
            }
        )

    async def put(request: Request) -> Response:
        attachment_id = request.path_params["attachment_id"]
        await pp.chat.upload_session(attachment_id)  # refused before the body is read
        data = await read_body(request.receive, request.headers.get("content-length"), pp.files.max_size)
        await pp.chat.write_upload(attachment_id, data)
        return JSONResponse({"ok": True})

    async def complete(request: Request) -> Response:
        req = await parse(request, CompleteRequest)
        url = stored_url(pp, request, req.attachmentId)
        attachment = await pp.chat.complete_upload(req.sessionId, req.attachmentId, url)
        out = attachment.to_wire()
        if not pp.public_url:  # the visitor's own widget may run on another origin
            out["url"] = f"{_base(request)}/attachments/{req.attachmentId}"
        return JSONResponse(out)

    async def download(request: Request) -> Response:
        attachment_id = request.path_params["attachment_id"]
        meta = await pp.chat.readable_attachment(attachment_id)
        inline = bool(INLINE_TYPES.match(meta["mime_type"]))
        return Download(
            pp.files.path(attachment_id),
            media_type=meta["mime_type"],
            filename=meta["filename"],
            content_disposition_type="inline" if inline else "attachment",
            headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
        )

    return [
        Route("/upload", start, methods=["POST"]),
        Route("/upload/complete", complete, methods=["POST"]),
        Route("/upload/{attachment_id}", put, methods=["PUT"]),
        Route("/attachments/{attachment_id}", download, methods=["GET"]),
    ]
