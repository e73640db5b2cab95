"""Real-time delivery over WebSocket, SSE and polling, against a real uvicorn server."""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from pocketping import PocketPing

from .conftest import SSEReader, connect


def ws_url(base: str, session_id: str, **params: str) -> str:
    query = "".join(f"&{k}={v}" for k, v in params.items())
    return base.replace("http://", "ws://") + f"/stream?sessionId={session_id}{query}"


def recv_type(ws: Any, type: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == type:
            return frame  # type: ignore[no-any-return]


def test_websocket_round_trip(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    with ws_connect(ws_url(base, sid)) as ws:
        r = http.post(
            "/message", json={"sessionId": sid, "content": "Hello?", "sender": "visitor", "attachmentIds": []}
        )
        assert r.status_code == 200
        sent = r.json()
        echo = recv_type(ws, "message")["data"]
        assert echo["id"] == sent["messageId"] and echo["sender"] == "visitor"
        started = time.monotonic()
        reply = pp.sync.send_message(sid, content="Hi, how can I help?", type="operator")
        frame = recv_type(ws, "message", timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert frame["data"] == {
            "id": reply.id,
            "sessionId": sid,
            "content": "Hi, how can I help?",
            "sender": "operator",
            "timestamp": frame["data"]["timestamp"],
            "status": "sent",
        }
        assert frame["data"]["timestamp"].endswith("Z") and len(frame["data"]["timestamp"]) == 24


def test_visitor_message_is_echoed_once_with_its_server_id(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    with ws_connect(ws_url(base, sid)) as ws:
        sent = http.post("/message", json={"sessionId": sid, "content": "once", "attachmentIds": []}).json()
        pp.sync.send_message(sid, content="marker")
        ids = []
        while True:
            frame = recv_type(ws, "message")
            ids.append(frame["data"]["id"])
            if frame["data"]["content"] == "marker":
                break
        assert ids.count(sent["messageId"]) == 1


def test_sse_round_trip(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    sse = SSEReader(f"{base}/stream?sessionId={sid}")
    try:
        assert sse.status == 200
        assert sse.response_headers is not None
        assert sse.response_headers["content-type"].startswith("text/event-stream")
        assert sse.response_headers["x-accel-buffering"] == "no"
        assert "no-cache" in sse.response_headers["cache-control"]
        started = time.monotonic()
        reply = pp.sync.send_message(sid, content="Operator here", type="operator")
        event = sse.next(timeout=1.0, type="message")
        assert time.monotonic() - started < 1.0
        assert event["json"]["data"]["id"] == reply.id
        assert event["id"] == event["json"]["data"]["timestamp"]
        assert "event" not in event  # unnamed events: the widget's default listener
        time.sleep(1.2)  # heartbeat interval is 0.5 s in tests
        assert any(c.startswith(": ping") for c in sse.comments)
    finally:
        sse.close()


def test_polling_round_trip(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    sent = http.post("/message", json={"sessionId": sid, "content": "anyone?", "attachmentIds": []}).json()
    cursor = sent["timestamp"]
    assert http.get("/messages", params={"sessionId": sid, "after": cursor}).json()["messages"] == []
    reply = pp.sync.send_message(sid, content="Yes!", type="operator")
    started = time.monotonic()
    got = http.get("/messages", params={"sessionId": sid, "after": cursor}).json()
    assert time.monotonic() - started < 1.0
    assert [m["id"] for m in got["messages"]] == [reply.id]
    assert got["messages"][0]["sender"] == "operator"
    assert http.get("/screenshot/requests", params={"sessionId": sid}).json() == {"requests": []}


def test_server_event_reaches_ws_and_sse(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    sse = SSEReader(f"{base}/stream?sessionId={sid}")
    try:
        with ws_connect(ws_url(base, sid)) as ws:
            pp.sync.emit_event(sid, "show_offer", discount=20, code="SAVE20")
            for data in (recv_type(ws, "event")["data"], sse.next(type="event")["json"]["data"]):
                assert data["name"] == "show_offer"
                assert data["data"] == {"discount": 20, "code": "SAVE20"}
                assert data["timestamp"].endswith("Z")
    finally:
        sse.close()


def test_widget_event_reaches_on_event(pp: PocketPing, base: str, http: httpx.Client) -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    @pp.on_event
    async def record(session: Any, event: Any) -> None:
        seen.append((session.id, event.name, event.data))

    sid = connect(http)["sessionId"]
    with ws_connect(ws_url(base, sid)) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "event",
                    "data": {
                        "name": "clicked_pricing",
                        "data": {"plan": "pro"},
                        "timestamp": "2026-06-04T09:34:50.123Z",
                    },
                }
            )
        )
        ws.send("not json")  # ignored, the socket stays open
        ws.send(json.dumps({"type": "inspector_select", "data": {"selector": "#x"}}))
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen == [(sid, "clicked_pricing", {"plan": "pro"})]


def test_typing_presence_edit_delete_pushes(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    with ws_connect(ws_url(base, sid)) as ws:
        pp.sync.send_typing(sid)
        assert recv_type(ws, "typing")["data"]["isTyping"] is True
        msg = pp.sync.send_message(sid, content="typo")
        recv_type(ws, "message")
        pp.sync.set_operator_online(True)
        assert recv_type(ws, "presence")["data"] == {"online": True}
        pp.sync.edit_message(sid, msg.id, "fixed")
        edited = recv_type(ws, "message_edited")["data"]
        assert edited["messageId"] == msg.id and edited["content"] == "fixed"
        pp.sync.delete_message(sid, msg.id)
        assert recv_type(ws, "message_deleted")["data"]["messageId"] == msg.id
        pp.sync.close_session(sid)
        closed = recv_type(ws, "event")["data"]
        assert closed["name"] == "session_closed"
    assert connect(http, sessionId=sid)["operatorOnline"] is True


def test_operator_typing_expires_by_itself(
    pp: PocketPing, base: str, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pp.chat, "typing_ttl", 0.3)
    sid = connect(http)["sessionId"]
    with ws_connect(ws_url(base, sid)) as ws:
        pp.sync.send_typing(sid)
        assert recv_type(ws, "typing")["data"]["isTyping"] is True
        assert recv_type(ws, "typing", timeout=2)["data"]["isTyping"] is False


def test_every_open_stream_of_the_session_gets_pushes(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    other = connect(http, visitor_id="other-visitor")["sessionId"]
    with (
        ws_connect(ws_url(base, sid)) as tab1,
        ws_connect(ws_url(base, sid)) as tab2,
        ws_connect(ws_url(base, other)) as stranger,
    ):
        sse = SSEReader(f"{base}/stream?sessionId={sid}")
        try:
            m = pp.sync.send_message(sid, content="to both tabs")
            assert recv_type(tab1, "message")["data"]["id"] == m.id
            assert recv_type(tab2, "message")["data"]["id"] == m.id
            assert sse.next(type="message")["json"]["data"]["id"] == m.id
            pp.sync.send_message(other, content="for the other one")
            assert recv_type(stranger, "message")["data"]["content"] == "for the other one"
            with pytest.raises(TimeoutError):
                recv_type(tab1, "message", timeout=0.3)
        finally:
            sse.close()


def test_sse_resumes_with_last_event_id(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    first = SSEReader(f"{base}/stream?sessionId={sid}")
    pp.sync.send_message(sid, content="one")
    last_id = first.next(type="message")["id"]
    first.close()
    missed = [pp.sync.send_message(sid, content=f"missed {i}").id for i in range(3)]
    edited = pp.sync.edit_message(sid, missed[0], "missed 0 (edited)")
    second = SSEReader(f"{base}/stream?sessionId={sid}", headers={"Last-Event-ID": last_id})
    try:
        got = [second.next(type="message")["json"]["data"] for _ in range(3)]
        # in change order: missed 1, missed 2, then the edited missed 0
        assert [m["id"] for m in got] == [missed[1], missed[2], missed[0]]
        assert (
            got[2]["content"] == "missed 0 (edited)" and got[2]["editedAt"] == edited.edited_at.isoformat()[:23] + "Z"
        )
        with pytest.raises(queue.Empty):
            second.next(timeout=0.3, type="message")
    finally:
        second.close()


def test_ws_replays_recent_messages_on_reconnect(pp: PocketPing, base: str, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    m = pp.sync.send_message(sid, content="sent while no socket was open")
    with ws_connect(ws_url(base, sid)) as ws:
        assert recv_type(ws, "message")["data"]["id"] == m.id


def test_sse_without_a_cursor_replays_what_came_before_it_opened(pp: PocketPing, base: str, http: httpx.Client) -> None:
    # A reply sent between /connect and the stream's opening: the widget has no cursor yet.
    sid = connect(http)["sessionId"]
    m = pp.sync.send_message(sid, content="sent before the stream opened")
    sse = SSEReader(f"{base}/stream?sessionId={sid}")
    try:
        event = sse.next(timeout=2.0, type="message")
        assert event["json"]["data"]["id"] == m.id and event["id"] == event["json"]["data"]["timestamp"]
    finally:
        sse.close()
    # With the cursor of that reply, nothing is replayed twice.
    later = pp.sync.send_message(sid, content="after")
    resumed = SSEReader(f"{base}/stream?sessionId={sid}", headers={"Last-Event-ID": event["id"]})
    try:
        assert resumed.next(timeout=2.0, type="message")["json"]["data"]["id"] == later.id
        with pytest.raises(queue.Empty):
            resumed.next(timeout=0.5, type="message")
    finally:
        resumed.close()


def test_stream_rejects_unknown_session(base: str, http: httpx.Client) -> None:
    r = http.get("/stream", params={"sessionId": "sess_nope"}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 404 and r.json()["error"] == "session_not_found"
    assert http.get("/stream").status_code == 400
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(base, "sess_nope"), open_timeout=5)
    assert refused.value.response.status_code == 403


class RawWebSocket:
    """A bare WebSocket client over a socket with a tiny receive buffer, so that a client
    that stops reading really fills the server's send buffer (no library reads ahead)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_json(self) -> dict[str, Any]:
        first, second = self._read(2)
        assert first & 0x0F == 1, "a text frame"
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(self._read(2), "big")
        elif size == 127:
            size = int.from_bytes(self._read(8), "big")
        return json.loads(self._read(size))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


def test_a_client_that_stops_reading_holds_no_one_back(serve: Any) -> None:
    """A socket whose client stops reading fills up and makes its sends wait; pushes to
    everyone else still go out at once, and the slow client later gets all of its own, in order."""
    from pocketping import MemoryStorage

    N = 200
    pp = PocketPing(storage=MemoryStorage(), max_message_length=100_000)
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        slow_sid = connect(http, visitor_id="slow")["sessionId"]
        fast_sid = connect(http, visitor_id="fast")["sessionId"]
        slow = RawWebSocket(ws_url(base, slow_sid))
        try:
            with ws_connect(ws_url(base, fast_sid)) as fast:
                payload = "x" * 20_000
                for i in range(N):  # about 4 MB for a client that reads nothing
                    pp.sync.send_message(slow_sid, content=f"{i} {payload}")
                started = time.monotonic()
                quick = pp.sync.send_message(fast_sid, content="still on time")
                assert recv_type(fast, "message", timeout=2)["data"]["id"] == quick.id
                assert time.monotonic() - started < 2
                got = []
                while len(got) < N:
                    frame = slow.recv_json()
                    if frame["type"] == "message":
                        got.append(int(frame["data"]["content"].split()[0]))
                assert got == list(range(N))
        finally:
            slow.close()
