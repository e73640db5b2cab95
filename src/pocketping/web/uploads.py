"""Attachment uploads: ``POST /upload`` → ``PUT /upload/{id}`` → ``POST /upload/complete``,
and ``GET /attachments/{id}`` to read them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidInput
from ..files import INLINE_TYPES, attachment_from_meta
from ..models import iso
from ..protocol import Id, _In
from .parsing import parse

if TYPE_CHECKING:
    from ..core import PocketPing

UPLOAD_TTL = timedelta(minutes=15)


class UploadRequest(_In):
    sessionId: Id
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    mimeType: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "application/octet-stream"
    size: Annotated[int, Field(strict=True, ge=1)]


class CompleteRequest(_In):
    sessionId: Id
    attachmentId: Id


def _base(request: Request) -> str:
    """The mount's absolute URL (``http://host/pocketping``), whatever the host app's layout."""
    root = request.scope.get("root_path", "").rstrip("/")
    return str(request.url.replace(path=root, query="", fragment="")).rstrip("/")


def upload_routes(pp: PocketPing) -> list[Route]:
    async def start(request: Request) -> Response:
        req = await parse(request, UploadRequest)
        await pp._session(req.sessionId)
        meta = await pp.files.create(req.sessionId, req.filename, req.mimeType.lower(), req.size)
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
        limit = pp.files.max_size
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidInput(f"file is larger than {limit} bytes")
            chunks.append(chunk)
        await pp.files.write(attachment_id, b"".join(chunks))
        return JSONResponse({"ok": True})

    async def complete(request: Request) -> Response:
        req = await parse(request, CompleteRequest)
        meta = await pp.files.meta(req.attachmentId)
        if meta is None or meta["session_id"] != req.sessionId:
            raise InvalidInput(f"no upload {req.attachmentId!r} in this session")
        meta = await pp.files.complete(req.attachmentId)
        meta["url"] = f"{_base(request)}/attachments/{meta['id']}"
        pp.files._write_meta(meta)
        return JSONResponse(attachment_from_meta(meta, meta["url"]).to_wire())

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
