"""Where uploaded attachments live: a directory, one file per attachment plus a JSON sidecar.

The widget uploads in three steps (``POST /upload`` → ``PUT <uploadUrl>`` → ``POST
/upload/complete``) and then names the attachment ids in ``POST /message``. Several hosts
need a shared directory (NFS, a mounted volume); or pass your own object with the same
methods as :class:`LocalFileStore`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
import time
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


#: Seconds between two sweeps of expired unfinished uploads (``create`` sweeps as it goes).
SWEEP_INTERVAL = 30.0


class LocalFileStore:
    """Attachments in a directory. Replace it with any object that has these methods
    (``create``, ``meta``, ``write``, ``complete``, ``path``; ``delete_sessions`` for
    ``forget`` and ``purge``) and ``max_size``.

    An upload must be finished within 15 minutes (``expires_ms`` in its metadata); one session
    may have at most ``max_pending`` unfinished uploads of ``max_pending_bytes`` in all.
    Expired unfinished uploads are removed, files included.

    Beside each attachment's file and JSON sidecar, an index (``.index/``) lists the
    attachments of each session and the unfinished uploads in expiry order, so starting an
    upload, the expiry sweep and erasure read only what they are about, however many files
    are stored. A directory written before the index existed is indexed once, on first use.
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
        self._index = self.directory / ".index"
        self._indexed = False
        self._swept_at = 0.0
        # The changes of one process run one at a time: two uploads started at once cannot
        # both take the last slot, and an erasure never interleaves with an upload step.
        self._changing = threading.Lock()

    def _paths(self, attachment_id: str) -> tuple[Path, Path]:
        if not _ID.match(attachment_id):
            raise InvalidInput(f"not an attachment id: {attachment_id!r}")
        return self.directory / f"{attachment_id}.bin", self.directory / f"{attachment_id}.json"

    # -- the index ----------------------------------------------------------------------------
    #
    # .index/sessions/<hash of the session id>/<attachment id>   one per attachment of the session
    # .index/sessions/<hash>/<attachment id>.pending             while unfinished; holds its size
    # .index/pending/<expires_ms, 13 digits>-<attachment id>     while unfinished, in expiry order

    def _session_dir(self, session_id: str) -> Path:
        digest = hashlib.sha256(str(session_id).encode()).hexdigest()[:32]
        return self._index / "sessions" / digest

    def _ensure_index(self) -> None:
        if self._indexed:
            return
        built = self._index / "v1"
        if not built.exists():
            (self._index / "pending").mkdir(parents=True, exist_ok=True)
            for meta_path in self.directory.glob("att_*.json"):
                meta = _read_json(meta_path)
                if meta is not None and isinstance(meta.get("session_id"), str):
                    self._list_under_session(meta)
                    self._mark_unfinished(meta)
            built.touch()
        self._indexed = True

    def _list_under_session(self, meta: dict[str, Any]) -> None:
        folder = self._session_dir(meta["session_id"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / meta["id"]).touch()

    def _mark_unfinished(self, meta: dict[str, Any]) -> None:
        if meta.get("status") != "ready":
            folder = self._session_dir(meta["session_id"])
            (folder / f"{meta['id']}.pending").write_text(str(int(meta.get("size") or 0)))
            (self._index / "pending" / _pending_name(meta)).touch()

    def _finished_in_index(self, meta: dict[str, Any]) -> None:
        (self._session_dir(meta["session_id"]) / f"{meta['id']}.pending").unlink(missing_ok=True)
        (self._index / "pending" / _pending_name(meta)).unlink(missing_ok=True)

    def _remove(self, attachment_id: str, meta: dict[str, Any] | None) -> None:
        """Remove an attachment's files, sidecar last, and its index entries."""
        data_path, meta_path = self._paths(attachment_id)
        for path in (data_path, meta_path.with_suffix(".part"), meta_path.with_suffix(".tmp")):
            path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        if meta is not None and isinstance(meta.get("session_id"), str):
            self._finished_in_index(meta)
            (self._session_dir(meta["session_id"]) / attachment_id).unlink(missing_ok=True)

    # -- uploads ------------------------------------------------------------------------------

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
            with self._changing:
                self._ensure_index()
                self._sweep_now_and_then()
                slots, pending = self._unfinished(session_id)
                if slots >= self.max_pending:
                    raise InvalidInput(f"at most {self.max_pending} uploads may be in progress; finish or wait")
                if pending + size > self.max_pending_bytes:
                    raise InvalidInput(f"uploads in progress may hold at most {self.max_pending_bytes} bytes")
                self._write_meta(meta)  # listed under its session with it
                self._mark_unfinished(meta)

        await anyio.to_thread.run_sync(reserve)
        return meta

    def _unfinished(self, session_id: str) -> tuple[int, int]:
        """This session's unfinished uploads that have not expired: (count, bytes); removes
        the expired ones it sees."""
        slots = pending = 0
        now = now_ms()
        try:
            names = os.listdir(self._session_dir(session_id))
        except FileNotFoundError:
            return 0, 0
        for name in names:
            if not name.endswith(".pending"):
                continue
            attachment_id = name.removesuffix(".pending")
            meta = _read_json(self._paths(attachment_id)[1])
            if meta is None or meta.get("status") == "ready":
                continue
            if meta.get("expires_ms", now + 1) <= now:
                self._remove(attachment_id, meta)  # its slot is free again, its files gone
                continue
            slots += 1
            pending += int(meta.get("size") or 0)
        return slots, pending

    def _sweep_now_and_then(self) -> None:
        if time.monotonic() - self._swept_at >= SWEEP_INTERVAL:
            self._sweep()

    def _sweep(self) -> int:
        """Remove expired unfinished uploads, oldest first: reads only the expired entries."""
        self._swept_at = time.monotonic()
        now = now_ms()
        removed = 0
        try:
            names = sorted(os.listdir(self._index / "pending"))
        except FileNotFoundError:
            return 0
        for name in names:
            expires, _, attachment_id = name.partition("-")
            if not expires.isdigit():
                continue  # not ours
            if int(expires) > now:
                break
            meta = _read_json(self._paths(attachment_id)[1]) if _ID.match(attachment_id) else None
            if meta is not None and meta.get("status") != "ready":
                self._remove(attachment_id, meta)
                removed += 1
            (self._index / "pending" / name).unlink(missing_ok=True)
        return removed

    def sweep(self) -> int:
        """Remove expired unfinished uploads now (``create`` does it every 30 s); how many."""
        with self._changing:
            self._ensure_index()
            return self._sweep()

    @staticmethod
    def _check_fresh(meta: dict[str, Any]) -> None:
        if meta.get("status") != "ready" and meta.get("expires_ms", now_ms() + 1) <= now_ms():
            raise InvalidInput("this upload has expired; start it again")

    def _write_meta(self, meta: dict[str, Any]) -> None:
        """Write an attachment's sidecar, and its session's index entry with it: whatever is
        on disk is listed under its session, so an erasure that runs after this finds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _, meta_path = self._paths(meta["id"])
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        self._list_under_session(meta)
        tmp.replace(meta_path)

    async def meta(self, attachment_id: str) -> dict[str, Any] | None:
        _, meta_path = self._paths(attachment_id)
        return await anyio.to_thread.run_sync(_read_json, meta_path)

    async def write(self, attachment_id: str, data: bytes) -> dict[str, Any]:
        meta = await self.meta(attachment_id)
        if meta is None:
            raise InvalidInput(f"no pending upload {attachment_id!r}")
        self._check_fresh(meta)
        if meta["status"] != "pending":
            raise InvalidInput("this upload is already complete")
        if len(data) != meta["size"]:
            raise InvalidInput(f"expected {meta['size']} bytes, got {len(data)}")
        data_path, meta_path = self._paths(attachment_id)

        def store() -> None:
            # Beside the session's index entries, where its erasure finds it even after a crash.
            folder = self._session_dir(meta["session_id"])
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{attachment_id}.{secrets.token_hex(4)}.part"
            try:
                tmp.write_bytes(data)  # outside the lock: a large write holds up nobody
            except FileNotFoundError:  # the session's entries were erased meanwhile
                raise InvalidInput(f"no pending upload {attachment_id!r}") from None
            try:
                with self._changing:
                    # Read again: erased, finished or written by another request meanwhile?
                    current = _read_json(meta_path)
                    if current is None:
                        raise InvalidInput(f"no pending upload {attachment_id!r}")
                    self._check_fresh(current)
                    if current["status"] != "pending":
                        raise InvalidInput("this upload is already complete")
                    tmp.replace(data_path)
                    current["status"] = "uploaded"
                    self._write_meta(current)
                    meta.update(current)
            finally:
                tmp.unlink(missing_ok=True)

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

            def finish() -> None:
                with self._changing:
                    current = _read_json(self._paths(attachment_id)[1])  # erased meanwhile?
                    if current is None or current["status"] == "pending":
                        raise InvalidInput(f"attachment {attachment_id!r} has not been uploaded")
                    current["status"] = "ready"
                    if url is not None:
                        current["url"] = url
                    self._write_meta(current)
                    self._finished_in_index(current)
                    meta.update(current)

            await anyio.to_thread.run_sync(finish)
        return meta

    def path(self, attachment_id: str) -> Path:
        return self._paths(attachment_id)[0]

    async def delete_sessions(self, session_ids: Iterable[str]) -> int:
        """Delete every file of these sessions (uploaded, pending or attached); how many. Reads
        only these sessions' entries of the index."""
        doomed = list(dict.fromkeys(session_ids))

        def erase() -> int:
            with self._changing:
                return erase_now()

        def erase_now() -> int:
            self._ensure_index()
            removed = 0
            for session_id in doomed:
                folder = self._session_dir(session_id)
                try:
                    names = os.listdir(folder)
                except FileNotFoundError:
                    continue
                for name in names:
                    if name.endswith(".part"):  # bytes of an upload being written
                        (folder / name).unlink(missing_ok=True)
                        continue
                    if name.endswith(".pending") or not _ID.match(name):
                        continue
                    meta = _read_json(self._paths(name)[1])
                    if meta is not None and meta.get("session_id") != session_id:
                        continue  # not this session's (a hash collision): leave it
                    self._remove(name, meta or {"id": name, "session_id": session_id})
                    (folder / f"{name}.pending").unlink(missing_ok=True)
                    removed += 1
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only once empty: entries written meanwhile stay findable
            return removed

        return await anyio.to_thread.run_sync(erase)


def _pending_name(meta: dict[str, Any]) -> str:
    return f"{int(meta.get('expires_ms') or 0):013d}-{meta['id']}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def attachment_from_meta(meta: dict[str, Any], url: str) -> Attachment:
    return Attachment(meta["id"], meta["filename"], meta["mime_type"], meta["size"], url, status=meta["status"])
