"""Attachments: the widget's three-step upload, then a message that carries the file."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketping import InvalidInput, MemoryStorage, PocketPing
from pocketping.files import LocalFileStore
from pocketping.models import now_ms

from .conftest import connect

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def test_upload_then_send_with_attachment(serve: Any, tmp_path: Path) -> None:
    pp = PocketPing(storage=MemoryStorage(), files=LocalFileStore(tmp_path / "up"))
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        r = http.post(
            "/upload", json={"sessionId": sid, "filename": "../shot.png", "mimeType": "image/png", "size": len(PNG)}
        )
        assert r.status_code == 200, r.text
        ticket = r.json()
        assert ticket["uploadUrl"] == f"{base}/upload/{ticket['attachmentId']}" and ticket["expiresAt"].endswith("Z")
        assert httpx.put(ticket["uploadUrl"], content=PNG, headers={"Content-Type": "image/png"}).status_code == 200
        done = http.post("/upload/complete", json={"sessionId": sid, "attachmentId": ticket["attachmentId"]}).json()
        assert done["id"] == ticket["attachmentId"] and done["filename"] == "shot.png"
        assert done["mimeType"] == "image/png" and done["size"] == len(PNG) and done["status"] == "ready"
        sent = http.post("/message", json={"sessionId": sid, "content": "", "attachmentIds": [done["id"]]}).json()
        assert sent["attachments"][0]["id"] == done["id"]
        history = connect(http, sessionId=sid)["messages"]
        assert history[0]["attachments"][0]["url"] == done["url"]
        got = httpx.get(done["url"])
        assert got.content == PNG and got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"


def test_upload_rejections(serve: Any, tmp_path: Path) -> None:
    pp = PocketPing(storage=MemoryStorage(), files=LocalFileStore(tmp_path / "up", max_size=1000))
    with httpx.Client(base_url=serve(pp)) as http:
        sid = connect(http)["sessionId"]
        other = connect(http, visitor_id="other")["sessionId"]

        def start(**kw: Any) -> httpx.Response:
            return http.post(
                "/upload", json={"sessionId": sid, "filename": "a.png", "mimeType": "image/png", "size": 10, **kw}
            )

        assert start(mimeType="text/html").status_code == 400
        assert start(mimeType="image/svg+xml").status_code == 400
        assert start(size=5000).status_code == 400
        assert start(sessionId="sess_nope").status_code == 404
        ticket = start().json()
        assert httpx.put(ticket["uploadUrl"], content=b"short").status_code == 400  # size mismatch
        # not uploaded yet → cannot complete or be attached
        assert (
            http.post("/upload/complete", json={"sessionId": sid, "attachmentId": ticket["attachmentId"]}).status_code
            == 400
        )
        r = http.post("/message", json={"sessionId": sid, "content": "", "attachmentIds": [ticket["attachmentId"]]})
        assert r.status_code == 400 and pp.sync.get_messages(sid) == []
        assert httpx.put(ticket["uploadUrl"], content=b"0123456789").status_code == 200
        # another session cannot take it
        r = http.post("/upload/complete", json={"sessionId": other, "attachmentId": ticket["attachmentId"]})
        assert r.status_code == 400
        assert httpx.put(
            ticket["uploadUrl"].replace(ticket["attachmentId"], "att_../../etc"), content=b"x"
        ).status_code in (400, 404)


# -- the file store's index: cost by session, not by files stored -----------------------------

_opened: list[str] = []
_counting = False


def _count_sidecar_reads(event: str, args: tuple[Any, ...]) -> None:
    if _counting and event == "open" and str(args[0]).endswith(".json"):
        _opened.append(str(args[0]))


sys.addaudithook(_count_sidecar_reads)  # audit hooks stay for the process: counting is off by default


def _sidecar_reads(action: Any) -> int:
    global _counting
    _opened.clear()
    _counting = True
    try:
        asyncio.run(action())
    finally:
        _counting = False
    return len(_opened)


def test_upload_start_and_erasure_read_only_their_sessions_files(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "up")

    async def fill() -> None:
        for i in range(1500):  # finished files of other sessions: they never count against a quota
            meta = await store.create(f"sess_other{i % 300:05d}", "a.png", "image/png", len(PNG))
            await store.write(meta["id"], PNG)
            await store.complete(meta["id"], url=f"/attachments/{meta['id']}")
        for _ in range(3):
            await store.create("sess_mine", "b.png", "image/png", len(PNG))

    asyncio.run(fill())

    async def start() -> None:
        await store.create("sess_mine", "c.png", "image/png", len(PNG))

    async def erase() -> None:
        assert await store.delete_sessions(["sess_mine"]) == 4

    # The session's own three unfinished uploads are read; none of the 1,500 other files.
    assert _sidecar_reads(start) <= 5
    assert _sidecar_reads(erase) <= 6
    assert len(list((tmp_path / "up").glob("att_*.json"))) == 1500


def test_a_directory_written_before_the_index_is_indexed_once(tmp_path: Path) -> None:
    """Files of an earlier version (sidecars only): erasure and quotas still find them."""
    folder = tmp_path / "up"
    folder.mkdir()
    far = now_ms() + 600_000
    for n, (session, status) in enumerate([("sess_a", "ready"), ("sess_a", "pending"), ("sess_b", "uploaded")]):
        aid = f"att_oldfile{n:05d}"
        meta = {"id": aid, "session_id": session, "filename": "x.png", "mime_type": "image/png", "size": 10}
        (folder / f"{aid}.json").write_text(json.dumps({**meta, "status": status, "expires_ms": far}))
        (folder / f"{aid}.bin").write_bytes(b"0123456789")
    store = LocalFileStore(folder, max_pending=2)

    async def scenario() -> None:
        await store.create("sess_a", "y.png", "image/png", 10)  # sess_a's old pending one counts: 2 of 2
        with pytest.raises(InvalidInput, match="at most 2 uploads"):
            await store.create("sess_a", "z.png", "image/png", 10)
        assert await store.delete_sessions(["sess_a"]) == 3
        assert await store.meta("att_oldfile00002") is not None

    asyncio.run(scenario())
    assert sorted(p.name for p in folder.glob("att_*")) == ["att_oldfile00002.bin", "att_oldfile00002.json"]
