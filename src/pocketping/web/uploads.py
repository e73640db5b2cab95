"""Attachment uploads: ``POST /upload`` → ``PUT /upload/{id}`` → ``POST /upload/complete``,
and ``GET /attachments/{id}`` to read them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..files import INLINE_TYPES
from ..models import iso
from ..protocol import CompleteRequest, UploadRequest
from .parsing import parse, read_body

if TYPE_CHECKING:
    from ..core import PocketPing

UPLOAD_TTL = timedelta(minutes=15)


def _base(request: Request) -> str:
    """The mount's absolute URL (``http://host/pocketping``), whatever the host app's layout."""
    root = request.scope.get("root_path", "").rstrip("/")
    return str(request.url.replace(path=root, query="", fragment="")).rstrip("/")


def upload_routes(pp: PocketPing) -> list[Route]:
    async def start(request: Request) -> Response:
        req = await parse(request, UploadRequest)
        meta = await pp.chat.start_upload(req.sessionId, req.filename, req.mimeType, req.size)
        expires = datetime.now(UTC) + UPLOAD_TTL
        return JSONResponse(
            {
                "attachmentId": meta["id"],
                "uploadUrl": f"{_base(request)}/upload/{meta['id']}",
                "expiresAt": iso(expires),
            }
        )

    async def put(request: Request) -> Response:
        attachment_id = request.path_params["attachment_id"]
        data = await read_body(request.receive, request.headers.get("content-length"), pp.files.max_size)
        await pp.files.write(attachment_id, data)
        return JSONResponse({"ok": True})

    async def complete(request: Request) -> Response:
        req = await parse(request, CompleteRequest)
        url = f"{_base(request)}/attachments/{req.attachmentId}"
        attachment = await pp.chat.complete_upload(req.sessionId, req.attachmentId, url)
        return JSONResponse(attachment.to_wire())

    async def download(request: Request) -> Response:
        attachment_id = request.path_params["attachment_id"]
        meta = await pp.files.meta(attachment_id)
        if meta is None or meta["status"] != "ready":
            return JSONResponse({"error": "not_found", "detail": "no such attachment"}, status_code=404)
        inline = bool(INLINE_TYPES.match(meta["mime_type"]))
        return FileResponse(
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
