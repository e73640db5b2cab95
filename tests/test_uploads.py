"""Attachments: the widget's three-step upload, then a message that carries the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from pocketping import MemoryStorage, PocketPing
from pocketping.files import LocalFileStore

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
