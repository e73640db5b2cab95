"""Where uploaded attachments live: a directory, one file per attachment plus a JSON sidecar.

The widget uploads in three steps (``POST /upload`` → ``PUT <uploadUrl>`` → ``POST
/upload/complete``) and then names the attachment ids in ``POST /message``. Several hosts
need a shared directory (NFS, a mounted volume); or pass your own object with the same
methods as :class:`LocalFileStore`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio.to_thread

from .errors import InvalidInput
from .models import Attachment, new_id, now_ms

_ID = re.compile(r"^att_[A-Za-z0-9_-]{8,40}$")
ALLOWED_TYPES = re.compile(
    r"^(image/(png|jpeg|gif|webp|avif|bmp|heic)|audio/[\w.+-]+|video/[\w.+-]+|application/pdf|text/plain|"
    r"application/msword|application/vnd\.openxmlformats-officedocument\.[\w.-]+|"
    r"application/vnd\.ms-excel|application/octet-stream)$"
)
#: Types a browser may show inline from our origin; everything else is served as a download.
INLINE_TYPES = re.compile(r"^(image/(png|jpeg|gif|webp|avif|bmp)|audio/[\w.+-]+|video/[\w.+-]+|application/pdf)$")


#: How long an upload may stay unfinished (``POST /upload`` to ``/upload/complete``).
UPLOAD_TTL_MS = 15 * 60 * 1000


class LocalFileStore:
    """Attachments in a directory. Replace it with any object that has these methods
    (``create``, ``meta``, ``write``, ``complete``, ``path``; ``delete_sessions`` for
    ``forget`` and ``purge``) and ``max_size``.

    An upload must be finished within 15 minutes (``expires_ms`` in its metadata); one session
    may have at most ``max_pending`` unfinished uploads of ``max_pending_bytes`` in all.
    Expired unfinished uploads are removed, files included.
    """

    def __init__(
        self,
        directory: str | Path = "pocketping-uploads",
        *,
        max_size: int = 10 * 1024 * 1024,
        max_pending: int = 5,
        max_pending_bytes: int = 25 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.max_size = max_size
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes

    def _paths(self, attachment_id: str) -> tuple[Path, Path]:
        if not _ID.match(attachment_id):
            raise InvalidInput(f"not an attachment id: {attachment_id!r}")
        return self.directory / f"{attachment_id}.bin", self.directory / f"{attachment_id}.json"

    async def create(self, session_id: str, filename: str, mime_type: str, size: int) -> dict[str, Any]:
        if not ALLOWED_TYPES.match(mime_type):
            raise InvalidInput(f"files of type {mime_type!r} are not accepted")
        if not 0 < size <= self.max_size:
            raise InvalidInput(f"file size must be between 1 and {self.max_size} bytes, not {size}")
        name = os.path.basename(filename.replace("\\", "/")).strip() or "file"
        meta = {
            "id": new_id("att"),
            "session_id": session_id,
            "filename": name[:200],
            "mime_type": mime_type,
            "size": size,
            "status": "pending",
            "expires_ms": now_ms() + UPLOAD_TTL_MS,
        }

        def reserve() -> None:
            slots, pending = self._unfinished(session_id)
            if slots >= self.max_pending:
                raise InvalidInput(f"at most {self.max_pending} uploads may be in progress; finish or wait")
            if pending + size > self.max_pending_bytes:
                raise InvalidInput(f"uploads in progress may hold at most {self.max_pending_bytes} bytes")
            self._write_meta(meta)

        await anyio.to_thread.run_sync(reserve)
        return meta

    def _unfinished(self, session_id: str) -> tuple[int, int]:
        """This session's unfinished uploads (count, bytes); removes every expired one seen."""
        slots = pending = 0
        now = now_ms()
        for meta_path in self.directory.glob("att_*.json"):
            try:
                meta = json.loads(meta_path.read_text())
            except (FileNotFoundError, ValueError):
                continue
            if meta.get("status") == "ready":
                continue
            if meta.get("expires_ms", now + 1) <= now:
                self._remove(meta_path)
            elif meta.get("session_id") == session_id:
                slots += 1
                pending += int(meta.get("size") or 0)
        return slots, pending

    @staticmethod
    def _remove(meta_path: Path) -> None:
        for suffix in (".bin", ".part", ".tmp"):
            meta_path.with_suffix(suffix).unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)

    def sweep(self) -> None:
        """Remove expired unfinished uploads (``create`` does it as it goes)."""
        self._unfinished("")

    @staticmethod
    def _check_fresh(meta: dict[str, Any]) -> None:
        if meta.get("status") != "ready" and meta.get("expires_ms", now_ms() + 1) <= now_ms():
            raise InvalidInput("this upload has expired; start it again")

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _, meta_path = self._paths(meta["id"])
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(meta_path)

    async def meta(self, attachment_id: str) -> dict[str, Any] | None:
        _, meta_path = self._paths(attachment_id)

        def read() -> dict[str, Any] | None:
            try:
                return dict(json.loads(meta_path.read_text()))
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(read)

    async def write(self, attachment_id: str, data: bytes) -> dict[str, Any]:
        meta = await self.meta(attachment_id)
        if meta is None:
            raise InvalidInput(f"no pending upload {attachment_id!r}")
        self._check_fresh(meta)
        if meta["status"] != "pending":
            raise InvalidInput("this upload is already complete")
        if len(data) != meta["size"]:
            raise InvalidInput(f"expected {meta['size']} bytes, got {len(data)}")
        data_path, _ = self._paths(attachment_id)

        def store() -> None:
            tmp = data_path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(data_path)
            meta["status"] = "uploaded"
            self._write_meta(meta)

        await anyio.to_thread.run_sync(store)
        return meta

    async def complete(self, attachment_id: str, *, url: str | None = None) -> dict[str, Any]:
        """Mark an uploaded file ready; ``url`` is where it is served (kept in its metadata)."""
        meta = await self.meta(attachment_id)
        if meta is None or meta["status"] == "pending":
            raise InvalidInput(f"attachment {attachment_id!r} has not been uploaded")
        self._check_fresh(meta)
        if meta["status"] != "ready" or (url is not None and meta.get("url") != url):
            meta["status"] = "ready"
            if url is not None:
                meta["url"] = url
            await anyio.to_thread.run_sync(self._write_meta, meta)
        return meta

    def path(self, attachment_id: str) -> Path:
        return self._paths(attachment_id)[0]

    async def delete_sessions(self, session_ids: Iterable[str]) -> int:
        """Delete every file of these sessions (uploaded, pending or attached); how many."""
        doomed = set(session_ids)

        def sweep() -> int:
            removed = 0
            for meta_path in self.directory.glob("att_*.json"):
                try:
                    meta = json.loads(meta_path.read_text())
                except (FileNotFoundError, ValueError):
                    continue
                if meta.get("session_id") not in doomed:
                    continue
                self._remove(meta_path)
                removed += 1
            return removed

        return await anyio.to_thread.run_sync(sweep)


def attachment_from_meta(meta: dict[str, Any], url: str) -> Attachment:
    return Attachment(meta["id"], meta["filename"], meta["mime_type"], meta["size"], url, status=meta["status"])
