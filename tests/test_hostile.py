"""Hostile and unlucky clients against a real server (SQLite storage, the seed's hooks, uvicorn;
gunicorn with ``wrap_wsgi`` for SSE): every finding of the adversarial review, one test each
(numbers as in the review)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import ConnectionClosed

from pocketping import PocketPing, SQLiteStorage
from pocketping.files import LocalFileStore

from .conftest import LiveServer, SSEReader, connect, gunicorn_serving, mounted

Serve = Callable[[PocketPing], str]


def seed_pp(tmp: Path, **kw: Any) -> PocketPing:
    """The README's app: SQLite, the three hooks; limits off (every client here is 127.0.0.1)."""
    hooks: dict[str, Any] = {
        "on_session_start": lambda session: None,
        "on_message": lambda session, message: None,
        "on_event": lambda session, event: None,
    }
    options: dict[str, Any] = {"rate_limits": None, "files": LocalFileStore(tmp / "uploads"), **hooks, **kw}
    return PocketPing(storage=SQLiteStorage(tmp / "pp.db"), **options)


@pytest.fixture
def site(tmp_path: Path, serve: Serve) -> Iterator[tuple[PocketPing, httpx.Client]]:
    pp = seed_pp(tmp_path)
    with httpx.Client(base_url=serve(pp), timeout=10, headers={"X-PocketPing-Version": "2.6.0"}) as http:
        yield pp, http


def ws_url(http: httpx.Client, sid: str, **query: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return str(http.base_url).replace("http://", "ws://").rstrip("/") + f"/stream?sessionId={sid}{extra}"


# -- crashes and invalid output -----------------------------------------------------------------

CURSORS = ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize("cursor", CURSORS)
def test_01_an_unusable_cursor_is_a_400_everywhere(cursor: str, site: tuple[PocketPing, httpx.Client]) -> None:
    _pp, http = site
    sid = connect(http)["sessionId"]
    for r in (
        http.get("/messages", params={"sessionId": sid, "after": cursor}),
        http.get("/stream", params={"sessionId": sid, "after": cursor}),
        http.get("/stream", params={"sessionId": sid}, headers={"Last-Event-ID": cursor}),
    ):
        assert r.status_code == 400, r.text
        assert "out of range" in r.json()["detail"]
    with (  # the handshake is refused, nothing crashes
        pytest.raises(Exception) as refused,
        ws_client.connect(ws_url(http, sid, after=cursor.replace("+", "%2B")), open_timeout=5) as ws,
    ):
        ws.recv(timeout=5)
    assert "1008" in str(refused.value) or "403" in str(refused.value)
    # The keep-alive connection is still good.
    assert http.get("/messages", params={"sessionId": sid}).status_code == 200


def test_02_a_limit_that_only_looks_like_digits_is_a_400(site: tuple[PocketPing, httpx.Client]) -> None:
    _pp, http = site
    sid = connect(http)["sessionId"]
    for limit in ("²", "٣", "0", "1001", "-1"):
        r = http.get("/messages", params={"sessionId": sid, "limit": limit})
        assert r.status_code == 400 and "limit" in r.json()["detail"], limit


def test_03_binary_and_bad_timestamp_frames_are_ignored(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    seen: list[str] = []
    pp.on_event(lambda session, event: seen.append(event.name))
    sid = connect(http)["sessionId"]
    with ws_client.connect(ws_url(http, sid), open_timeout=5) as ws:
        ws.send(b"\x00\x01binary")
        ws.send(json.dumps({"type": "event", "data": {"name": "odd", "timestamp": "0001-01-01T00:00:00+05:00"}}))
        ws.send(json.dumps({"type": "event", "data": {"name": "after"}}))
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pp.sync.send_message(sid, "still open", type="operator")
        frames = [json.loads(ws.recv(timeout=5)) for _ in range(1)]
    assert frames[0]["type"] == "message" and frames[0]["data"]["content"] == "still open"
    assert seen == ["odd", "after"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/connect", b'{"visitorId": "v-nan", "metadata": {"x": NaN}}'),
        ("/connect", b'{"visitorId": "v-inf", "metadata": {"x": Infinity}}'),
        ("/connect", b'{"visitorId": "v-big", "identity": {"id": "u", "n": 1e999}}'),
        ("/identify", b'{"sessionId": "SID", "identity": {"id": "u", "n": -Infinity}}'),
    ],
)
def test_04_non_finite_numbers_are_refused(path: str, body: bytes, site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    sid = connect(http)["sessionId"]
    r = http.post(path, content=body.replace(b"SID", sid.encode()), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "finite" in json.dumps(r.json()["detail"])
    # Nothing non-finite was stored: every session still serialises as strict JSON.
    for session in pp.sync.get_sessions(include_closed=True):
        json.dumps(session.to_wire(), allow_nan=False)


def test_04_non_finite_event_data_is_dropped(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    seen: list[Any] = []
    pp.on_event(lambda session, event: seen.append(event.data))
    sid = connect(http)["sessionId"]
    with ws_client.connect(ws_url(http, sid), open_timeout=5) as ws:
        ws.send('{"type": "event", "data": {"name": "bad", "data": {"x": NaN}}}')
        ws.send('{"type": "event", "data": {"name": "good", "data": {"x": 1}}}')
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen == [{"x": 1}]


# -- lost or inconsistent data --------------------------------------------------------------------


def test_05_simultaneous_session_updates_all_land(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    base = str(http.base_url).rstrip("/")
    for trial in range(15):
        sid = connect(http, visitor_id=f"busy-{trial}")["sessionId"]
        calls = [
            ("/identify", {"sessionId": sid, "identity": {"id": f"user-{trial}", "email": "a@example.com"}}),
            ("/prechat", {"sessionId": sid, "email": "a@example.com"}),
            ("/csat", {"sessionId": sid, "score": 5}),
            ("/connect", {"visitorId": f"busy-{trial}", "sessionId": sid, "metadata": {"page": "/pricing"}}),
        ]
        answers: list[int] = []

        def call(path: str, body: dict[str, Any], answers: list[int] = answers) -> None:
            answers.append(httpx.post(base + path, json=body, timeout=10).status_code)

        threads = [threading.Thread(target=call, args=pb) for pb in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * 4
        session = pp.sync.get_session(sid)
        assert session.identity and session.identity["id"] == f"user-{trial}", trial
        assert session.data.get("prechat", {}).get("email") == "a@example.com", trial
        assert session.data.get("csat") == {"score": 5}, trial
        assert session.metadata.get("page") == "/pricing", trial


def test_06_a_reopened_session_keeps_its_new_activity(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    sid = connect(http)["sessionId"]
    pp.sync.close_session(sid)
    time.sleep(1.1)
    sent = http.post("/message", json={"sessionId": sid, "content": "I am back"}).json()
    session = pp.sync.get_session(sid)
    assert session.status == "active"
    assert session.last_activity is not None and session.last_activity.isoformat()[:19] >= sent["timestamp"][:19]
    assert pp.sync.get_sessions()[0].id == sid  # sorts as the most recent


def test_07_no_edit_lands_after_a_delete(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    base = str(http.base_url).rstrip("/")
    sid = connect(http)["sessionId"]
    for trial in range(10):
        mid = http.post("/message", json={"sessionId": sid, "content": f"m{trial}"}).json()["messageId"]
        results: dict[str, list[int]] = {"edit": [], "delete": []}

        def edit(n: int, mid: str = mid, results: dict[str, list[int]] = results) -> None:
            r = httpx.patch(f"{base}/message/{mid}", json={"sessionId": sid, "content": f"edit {n}"}, timeout=10)
            results["edit"].append(r.status_code)

        def delete(mid: str = mid, results: dict[str, list[int]] = results) -> None:
            r = httpx.delete(f"{base}/message/{mid}", params={"sessionId": sid}, timeout=10)
            results["delete"].append(r.status_code)

        threads = [threading.Thread(target=edit, args=(n,)) for n in range(5)]
        threads.append(threading.Thread(target=delete))
        threads += [threading.Thread(target=edit, args=(n,)) for n in range(5, 10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        message = next(m for m in pp.sync.get_messages(sid) if m.id == mid)
        assert message.deleted_at is not None
        assert message.edited_at is None or message.edited_at <= message.deleted_at, trial
        assert results["delete"] == [200] and set(results["edit"]) <= {200, 403}
    # And afterwards, whatever the order was: an edit of a deleted message is refused.
    r = http.patch(f"/message/{mid}", json={"sessionId": sid, "content": "too late"})
    assert r.status_code == 403


def test_08_simultaneous_first_connects_make_one_session(site: tuple[PocketPing, httpx.Client]) -> None:
    _pp, http = site
    base = str(http.base_url).rstrip("/")
    for n in range(20):
        got: list[str] = []

        def first(vid: str = f"racer-{n}", got: list[str] = got) -> None:
            r = httpx.post(base + "/connect", json={"visitorId": vid, "sessionId": None}, timeout=10)
            got.append(r.json()["sessionId"])

        threads = [threading.Thread(target=first) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(got)) == 1, n


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def upload(http: httpx.Client, sid: str, size: int = len(PNG), **headers: str) -> httpx.Response:
    return http.post(
        "/upload", json={"sessionId": sid, "filename": "a.png", "mimeType": "image/png", "size": size}, headers=headers
    )


def test_09_attachment_links_do_not_come_from_the_host_header(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    sid = connect(http)["sessionId"]
    ticket = upload(http, sid).json()
    assert httpx.put(ticket["uploadUrl"], content=PNG).status_code == 200
    done = http.post(
        "/upload/complete",
        json={"sessionId": sid, "attachmentId": ticket["attachmentId"]},
        headers={"Host": "evil.example"},
    )
    assert done.status_code == 200
    sent = http.post("/message", json={"sessionId": sid, "content": "", "attachmentIds": [ticket["attachmentId"]]})
    assert sent.status_code == 200
    stored = pp.sync.get_messages(sid)[-1].attachments[0]
    assert stored.url == f"/pocketping/attachments/{ticket['attachmentId']}"  # what operators see
    assert "evil.example" not in json.dumps([m.to_wire() for m in pp.sync.get_messages(sid)])
    # The visitor's own widget gets a link it can open, from its own request.
    history = http.get("/messages", params={"sessionId": sid}).json()["messages"]
    link = history[-1]["attachments"][0]["url"]
    assert link.startswith(str(http.base_url).rstrip("/")) and httpx.get(link).content == PNG


def test_09_a_public_url_makes_absolute_links(tmp_path: Path, serve: Serve) -> None:
    pp = seed_pp(tmp_path, public_url="https://chat.example.com/pocketping/")
    with httpx.Client(base_url=serve(pp), timeout=10) as http:
        sid = connect(http)["sessionId"]
        ticket = upload(http, sid).json()
        httpx.put(ticket["uploadUrl"], content=PNG)
        done = http.post("/upload/complete", json={"sessionId": sid, "attachmentId": ticket["attachmentId"]})
        assert done.json()["url"] == f"https://chat.example.com/pocketping/attachments/{ticket['attachmentId']}"


# -- resource exhaustion ----------------------------------------------------------------------------


def test_10_an_event_flood_is_bounded_and_closed(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    calls: list[str] = []
    pp.on_event(lambda session, event: calls.append(event.name))
    sid = connect(http)["sessionId"]
    frame = json.dumps({"type": "event", "data": {"name": "spam"}})
    sent = 0
    started = time.monotonic()
    with ws_client.connect(ws_url(http, sid), open_timeout=5) as ws:
        try:
            while time.monotonic() - started < 5:
                ws.send(frame)
                sent += 1
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1008
        else:
            raise AssertionError("a flooding stream was not closed")
    time.sleep(0.5)
    assert sent > 220  # more than a second's budget and the drops it tolerates
    # At most 20 frames in each clock second the flood touched got through.
    assert len(calls) <= 20 * (int(time.monotonic() - started) + 2)
    assert http.get("/health", timeout=5).status_code == 200  # the server kept up


@pytest.mark.parametrize("path", ["/typing", "/identify", "/upload/complete", "/prechat"])
def test_11_no_route_reads_a_huge_body(path: str, site: tuple[PocketPing, httpx.Client]) -> None:
    _pp, http = site
    port = http.base_url.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        head = (
            f"POST /pocketping{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {600 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"{" + b" " * (64 * 1024))
        answer = sock.recv(65536)  # answered long before 600 MB arrive
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert b"body_too_large" in answer
    finally:
        sock.close()


def test_12_session_metadata_cannot_grow_without_bound(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    sid = connect(http)["sessionId"]
    refused = None
    for n in range(60):
        metadata = {f"k{n}-{i}": "x" * 200 for i in range(20)}  # 20 new keys, 4 KB, each time
        r = http.post("/connect", json={"visitorId": "lx8k2m1q-4f9a0c2zb", "sessionId": sid, "metadata": metadata})
        if r.status_code != 200:
            refused = r
            break
    assert refused is not None and refused.status_code == 400
    assert "metadata" in refused.json()["detail"]
    row = pp.sync.get_session(sid)
    assert len(row.metadata) <= 100 and len(json.dumps(row.metadata)) <= 32 * 1024 + 1024
    big = {"visitorId": "v-big", "metadata": {"blob": "x" * 40_000}}
    assert http.post("/connect", json=big).status_code == 400


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_13_a_page_of_messages_costs_a_page(storage: str, tmp_path: Path, serve: Serve) -> None:
    from pocketping import MemoryStorage

    store: Any = MemoryStorage() if storage == "memory" else SQLiteStorage(tmp_path / "p.db")
    pp = PocketPing(storage=store, rate_limits=None)
    with httpx.Client(base_url=serve(pp), timeout=30) as http:
        sid = connect(http)["sessionId"]

        async def fill() -> None:
            for i in range(5000):
                await pp.chat.send_message(sid, f"m{i}")

        pp.sync.run(fill())
        calls: list[tuple[Any, Any]] = []
        real = pp.storage.get_messages

        async def spy(session_id: str, *, after: Any = None, limit: Any = None) -> Any:
            calls.append((after, limit))
            return await real(session_id, after=after, limit=limit)

        pp.storage.get_messages = spy  # type: ignore[method-assign]
        page = http.get("/messages", params={"sessionId": sid, "after": "1970-01-01T00:00:00Z", "limit": "1"}).json()
    assert [m["content"] for m in page["messages"]] == ["m0"] and page["hasMore"] is True
    assert calls and all(limit is not None and limit <= 2 for _after, limit in calls)  # never the whole history


def test_14_unfinished_uploads_have_a_quota_and_expire(tmp_path: Path, serve: Serve) -> None:
    files = LocalFileStore(tmp_path / "uploads", max_pending=5, max_pending_bytes=25 * 1024 * 1024)
    pp = seed_pp(tmp_path, files=files)
    with httpx.Client(base_url=serve(pp), timeout=10) as http:
        sid = connect(http)["sessionId"]
        tickets = [upload(http, sid, size=5 * 1024 * 1024) for _ in range(5)]
        assert [t.status_code for t in tickets] == [200] * 5
        refused = upload(http, sid)
        assert refused.status_code == 400 and "in progress" in refused.json()["detail"]
        other = connect(http, visitor_id="someone-else")["sessionId"]
        assert upload(http, other).status_code == 200  # the quota is per session
        # Expiry: an upload older than its expiresAt cannot be finished, and is removed.
        first = tickets[0].json()
        meta_path = tmp_path / "uploads" / f"{first['attachmentId']}.json"
        meta = json.loads(meta_path.read_text())
        meta["expires_ms"] = 1
        meta_path.write_text(json.dumps(meta))
        r = httpx.put(first["uploadUrl"], content=b"x" * (5 * 1024 * 1024))
        assert r.status_code == 400 and "expired" in r.json()["detail"]
        assert upload(http, sid).status_code == 200  # the expired slot was freed ...
        assert not meta_path.exists()  # ... and its files removed


def test_16_a_client_that_never_reads_is_released(site: tuple[PocketPing, httpx.Client]) -> None:
    pp, http = site
    sid = connect(http)["sessionId"]
    raw = socket.create_connection(("127.0.0.1", http.base_url.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    raw.sendall(
        (
            f"GET /pocketping/stream?sessionId={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert raw.recv(1024).startswith(b"HTTP/1.1 101")
    try:
        deadline = time.monotonic() + 10
        while pp.hub.count(sid) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        big = "y" * 50_000
        for _ in range(1500):  # never read: the server's queue for this client overflows
            pp.sync.emit_event(sid, "blob", data=big)
            if pp.hub.count(sid) == 0:
                break
        deadline = time.monotonic() + 15
        while pp.hub.count(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pp.hub.count(sid) == 0  # the stream slot is free well before 90 s
        assert http.get("/health").json()["streams"] == 0
    finally:
        raw.close()


WSGI_APP = """
from pocketping import MemoryStorage, PocketPing

pp = PocketPing(storage=MemoryStorage(), rate_limits=None, sse_heartbeat=0.5, max_sse_streams=4)

def site(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the site"]

app = pp.wrap_wsgi(site)
"""


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[str]:
    with gunicorn_serving(tmp_path, WSGI_APP, threads=8) as port:
        yield f"http://127.0.0.1:{port}/pocketping"


def test_15_sse_streams_under_wsgi_are_capped_and_released(gunicorn: str) -> None:
    with httpx.Client(base_url=gunicorn, timeout=10) as http:
        sids = [connect(http, visitor_id=f"sse-{i}")["sessionId"] for i in range(6)]
        readers = [SSEReader(f"{gunicorn}/stream?sessionId={sid}") for sid in sids[:4]]
        try:
            deadline = time.monotonic() + 10
            while http.get("/health").json()["streams"] < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            extra = http.get("/stream", params={"sessionId": sids[4]})
            assert extra.status_code == 503 and extra.json()["error"] == "sse_unavailable"
            # The worker still answers everything else (with every thread taken, these would hang).
            assert http.get("/health", timeout=5).status_code == 200
            assert http.get("/messages", params={"sessionId": sids[5]}, timeout=5).status_code == 200
            assert http.get("/health").json()["streams"] == 4
        finally:
            for reader in readers:
                reader.close()
        # Clients gone: their streams are released within a few heartbeats.
        deadline = time.monotonic() + 10
        while http.get("/health").json()["streams"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http.get("/health").json()["streams"] == 0
        again = SSEReader(f"{gunicorn}/stream?sessionId={sids[4]}")
        try:
            http.post("/message", json={"sessionId": sids[4], "content": "a slot again"})
            assert again.next(timeout=10, type="message")["json"]["data"]["content"] == "a slot again"
        finally:
            again.close()


# -- also ----------------------------------------------------------------------------------------------


def test_a_500_keeps_the_connection_and_says_so_in_json(tmp_path: Path) -> None:
    pp = seed_pp(tmp_path)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("storage exploded")

    server = LiveServer(mounted(pp)).start()
    try:
        with httpx.Client(base_url=server.url + "/pocketping", timeout=10) as http:
            sid = connect(http)["sessionId"]
        pp.storage.get_messages = broken  # type: ignore[method-assign]
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            get = "GET /pocketping/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            sock.sendall(get.format(f"messages?sessionId={sid}").encode())
            first = _response(sock)
            assert first.startswith(b"HTTP/1.1 500") and b'"error":"internal_error"' in first
            sock.sendall(get.format("health").encode())  # the same connection
            assert _response(sock).startswith(b"HTTP/1.1 200")
        finally:
            sock.close()
    finally:
        server.stop()


def _response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_invalid_json_says_what_is_wrong(site: tuple[PocketPing, httpx.Client]) -> None:
    _pp, http = site
    deep = http.post("/typing", content=b"[" * 30000, headers={"Content-Type": "application/json"})
    assert deep.status_code == 400 and "recursion limit" in deep.json()["detail"]
    huge = http.post("/typing", content=b'{"sessionId": "s", "n": ' + b"9" * 5000 + b"}")
    assert huge.status_code == 400 and "number" in huge.json()["detail"]


def test_an_empty_session_id_on_connect_means_none(site: tuple[PocketPing, httpx.Client]) -> None:
    _pp, http = site
    r = http.post("/connect", json={"visitorId": "fresh-visitor", "sessionId": ""})
    assert r.status_code == 200 and r.json()["sessionId"].startswith("sess_")


def test_a_change_made_while_a_stream_catches_up_arrives_once(site: tuple[PocketPing, httpx.Client]) -> None:
    """A stream subscribes, then reads what it missed: a message stored in between is both
    queued live and in the catch-up, and must reach the client once (SSE and WebSocket)."""
    pp, http = site
    sid = connect(http)["sessionId"]
    first = pp.sync.send_message(sid, "before", type="operator")
    real = pp.chat.catch_up

    async def racing(session_id: str, after: Any, limit: Any = None) -> Any:
        await pp.chat.send_message(session_id, "raced", type="operator")  # lands between the two
        return await real(session_id, after, limit)

    pp.chat.catch_up = racing  # type: ignore[method-assign]
    cursor = first.cursor.isoformat().replace("+00:00", "Z")
    reader = SSEReader(f"{http.base_url}stream?sessionId={sid}", headers={"Last-Event-ID": cursor})
    try:
        got = [reader.next(timeout=5, type="message")["json"]["data"]["content"]]
        pp.chat.catch_up = real  # type: ignore[method-assign]
        pp.sync.send_message(sid, "after", type="operator")
        while got[-1] != "after":
            got.append(reader.next(timeout=5, type="message")["json"]["data"]["content"])
    finally:
        reader.close()
    assert got == ["raced", "after"]

    pp.chat.catch_up = racing  # type: ignore[method-assign]
    with ws_client.connect(ws_url(http, sid, after=cursor), open_timeout=5) as ws:
        frames = [json.loads(ws.recv(timeout=5))["data"]]
        pp.chat.catch_up = real  # type: ignore[method-assign]
        pp.sync.send_message(sid, "last", type="operator")
        while frames[-1]["content"] != "last":
            frames.append(json.loads(ws.recv(timeout=5))["data"])
    ids = [f["id"] for f in frames]
    assert len(ids) == len(set(ids))  # each message once
    assert [f["content"] for f in frames] == ["raced", "after", "raced", "last"]  # the new "raced" too


def test_typing_state_is_kept_only_for_sessions_typing_now() -> None:
    """Each session that ever typed used to keep an entry for the life of the process."""
    import asyncio
    import tracemalloc

    from pocketping import MemoryStorage
    from pocketping import chat as chat_module

    pp = PocketPing(storage=MemoryStorage(), rate_limits=None)

    def held() -> int:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, chat_module.__file__)])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    async def scenario() -> tuple[int, int, int]:
        await pp.start()
        try:
            sids = [(await pp.chat.connect(f"v-{i}")).session.id for i in range(3000)]
            tracemalloc.start()
            before = held()
            for sid in sids:
                await pp.chat.visitor_typing(sid, True)
            typing = held()
            for _ in range(2):  # two typing intervals (2 s each) later, one session types again
                await asyncio.sleep(2.1)
                await pp.chat.visitor_typing(sids[0], True)
            return before, typing, held()
        finally:
            tracemalloc.stop()
            await pp.stop()

    before, typing, later = asyncio.run(scenario())
    assert typing - before > 50_000  # 3,000 entries are held while they type
    assert later - before < (typing - before) / 10, (before, typing, later)
