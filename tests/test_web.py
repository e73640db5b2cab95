"""The widget's HTTP endpoints on a real server: shapes, side effects, and bad input."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
import pytest

from pocketping import PocketPing

from .conftest import connect


def post(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    return http.post(path, json=body)


def test_connect_creates_then_resumes(pp: PocketPing, http: httpx.Client) -> None:
    started: list[str] = []
    pp.on_session_start(lambda s: started.append(s.id))
    first = connect(http)
    assert first["visitorId"] == "lx8k2m1q-4f9a0c2zb"
    assert first["sessionId"].startswith("sess_")
    assert first["welcomeMessage"] == "Hi! How can we help?"
    assert first["messages"] == [] and first["operatorOnline"] is False and first["operatorReachable"] is True
    again = connect(http, sessionId=first["sessionId"])
    assert again["sessionId"] == first["sessionId"]
    # unknown session id (server lost it): the visitor's session is resumed, never an error
    lost = connect(http, sessionId="sess_unknown")
    assert lost["sessionId"] == first["sessionId"]
    fresh = connect(http, visitor_id="someone-else", sessionId="sess_unknown")
    assert fresh["sessionId"] != first["sessionId"]
    deadline = time.monotonic() + 5
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started == [first["sessionId"], fresh["sessionId"]]


def test_connect_returns_history_and_identity(pp: PocketPing, http: httpx.Client) -> None:
    sid = connect(http, identity={"id": "user_1", "email": "a@b.c"})["sessionId"]
    sent = post(http, "/message", {"sessionId": sid, "content": "hi", "attachmentIds": []}).json()
    pp.sync.send_message(sid, content="hello", type="operator")
    body = connect(http, sessionId=sid)
    assert [m["content"] for m in body["messages"]] == ["hi", "hello"]
    assert body["messages"][0]["id"] == sent["messageId"]
    assert body["messages"][0]["timestamp"] == sent["timestamp"]
    assert body["identity"] == {"id": "user_1", "email": "a@b.c"}
    session = pp.sync.get_session(sid)
    assert session.metadata["url"] == "http://127.0.0.1/pricing" and session.metadata["ip"] == "127.0.0.1"


def test_message_is_stored_before_the_answer_and_sender_is_forced(pp: PocketPing, http: httpx.Client) -> None:
    got: list[tuple[str, str]] = []
    pp.on_message(lambda session, message: got.append((message.type, message.content)))
    sid = connect(http)["sessionId"]
    r = post(
        http, "/message", {"sessionId": sid, "content": "I am the operator", "sender": "operator", "attachmentIds": []}
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"messageId", "timestamp"}
    stored = pp.sync.get_messages(sid)
    assert [(m.id, m.sender) for m in stored] == [(body["messageId"], "visitor")]
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got == [("visitor", "I am the operator")]


def test_a_failing_handler_loses_nothing(pp: PocketPing, http: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    def boom(session: Any, message: Any) -> None:
        raise RuntimeError("handler bug")

    pp.on_message(boom)
    sid = connect(http)["sessionId"]
    r = post(http, "/message", {"sessionId": sid, "content": "still here", "attachmentIds": []})
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while "handler bug" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "on_message handler" in caplog.text and sid in caplog.text
    assert [m.content for m in pp.sync.get_messages(sid)] == ["still here"]


def test_visitor_edit_and_delete(pp: PocketPing, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    mid = post(http, "/message", {"sessionId": sid, "content": "typo", "attachmentIds": []}).json()["messageId"]
    r = http.patch(f"/message/{mid}", json={"sessionId": sid, "content": "  fixed  "})
    assert r.status_code == 200
    edited = r.json()["message"]
    assert edited["id"] == mid and edited["content"] == "fixed" and edited["editedAt"].endswith("Z")
    r = http.delete(f"/message/{mid}", params={"sessionId": sid})
    assert r.status_code == 200 and r.json() == {"deleted": True}
    polled = http.get("/messages", params={"sessionId": sid, "after": edited["editedAt"]}).json()["messages"]
    assert polled[0]["id"] == mid and polled[0]["deletedAt"] and polled[0]["content"] == ""
    op = pp.sync.send_message(sid, content="operator text")
    r = http.patch(f"/message/{op.id}", json={"sessionId": sid, "content": "hijack"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert http.delete(f"/message/{op.id}", params={"sessionId": sid}).status_code == 403
    assert pp.sync.get_messages(sid)[-1].content == "operator text"
    other = connect(http, visitor_id="intruder")["sessionId"]
    assert http.patch(f"/message/{mid}", json={"sessionId": other, "content": "x"}).status_code == 404


def test_read_receipts_are_persisted_and_pushed(pp: PocketPing, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    a = pp.sync.send_message(sid, content="one")
    b = pp.sync.send_message(sid, content="two")
    r = post(http, "/read", {"sessionId": sid, "messageIds": [a.id, b.id, "msg_unknown"], "status": "read"})
    assert r.json() == {"updated": 2}
    history = connect(http, sessionId=sid)["messages"]
    assert [m["status"] for m in history] == ["read", "read"] and all("readAt" in m for m in history)
    assert post(http, "/read", {"sessionId": sid, "messageIds": [a.id]}).json() == {"updated": 0}


def test_small_endpoints(pp: PocketPing, http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    assert post(http, "/typing", {"sessionId": sid, "sender": "visitor", "isTyping": True}).json() == {"ok": True}
    assert post(http, "/identify", {"sessionId": sid, "identity": {"id": "u1", "plan": "pro"}}).json() == {"ok": True}
    assert pp.sync.get_session(sid).identity == {"id": "u1", "plan": "pro"}
    assert post(http, "/prechat", {"sessionId": sid, "email": "ann@example.com"}).json() == {"ok": True}
    assert post(http, "/csat", {"sessionId": sid, "score": 5, "comment": " great "}).json() == {"ok": True}
    assert post(http, "/csat", {"sessionId": sid, "score": 1}).json() == {"ok": True, "alreadyRated": True}
    assert pp.sync.get_session(sid).data["csat"] == {"score": 5, "comment": "great"}
    # beacons: sendBeacon posts a Blob, sometimes as text/plain
    r = http.post(
        "/disconnect",
        content=b'{"sessionId":"%s","duration":12,"reason":"page_unload"}' % sid.encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert r.json() == {"ok": True}
    assert post(http, "/visibility", {"sessionId": sid, "state": "hidden", "timestamp": 1}).json() == {"ok": True}
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["storage"] == "MemoryStorage"


def test_prechat_form_state_in_connect(serve: Any) -> None:
    from pocketping import MemoryStorage

    pp = PocketPing(storage=MemoryStorage(), prechat_form={"required": True, "fields": "email-only"})
    with httpx.Client(base_url=serve(pp)) as http:
        body = connect(http)
        assert body["preChatForm"] == {
            "enabled": True,
            "required": True,
            "timing": "before-first-message",
            "fields": "email-only",
            "completed": False,
        }
        post(http, "/prechat", {"sessionId": body["sessionId"], "email": "a@example.com"})
        assert connect(http, sessionId=body["sessionId"])["preChatForm"]["completed"] is True


def test_cors_preflight_and_exposed_headers(http: httpx.Client) -> None:
    r = http.options(
        "/message/msg_1",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "content-type,x-pocketping-version",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert (
        "PATCH" in r.headers["access-control-allow-methods"] and "DELETE" in r.headers["access-control-allow-methods"]
    )
    assert int(r.headers["access-control-max-age"]) > 0
    r = http.post(
        "/connect",
        json={"visitorId": "v", "sessionId": None, "metadata": {}},
        headers={"Origin": "https://shop.example"},
    )
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert "X-PocketPing-Version-Status" in r.headers["access-control-expose-headers"]


def test_cors_can_be_restricted(serve: Any) -> None:
    from pocketping import MemoryStorage

    pp = PocketPing(storage=MemoryStorage(), allowed_origins=["https://good.example"])
    with httpx.Client(base_url=serve(pp)) as http:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        assert http.options("/connect", headers={"Origin": "https://good.example", **pre}).status_code == 200
        bad = http.options("/connect", headers={"Origin": "https://evil.example", **pre})
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        body = {"visitorId": "v", "sessionId": None, "metadata": {}}
        good = http.post("/connect", json=body, headers={"Origin": "https://good.example"})
        assert good.headers["access-control-allow-origin"] == "https://good.example"
        evil = http.post("/connect", json=body, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 200 and "access-control-allow-origin" not in evil.headers
        sid = good.json()["sessionId"]
        msg = http.post(
            "/message", json={"sessionId": sid, "content": "hi"}, headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in msg.headers


def test_version_negotiation(serve: Any) -> None:
    from pocketping import MemoryStorage

    pp = PocketPing(storage=MemoryStorage(), min_widget_version="2.0.0", latest_widget_version="2.7.0")
    with httpx.Client(base_url=serve(pp)) as http:
        body = {"visitorId": "v", "sessionId": None, "metadata": {}}
        ok = http.post("/connect", json=body, headers={"X-PocketPing-Version": "2.6.0"})
        assert ok.status_code == 200 and ok.headers["x-pocketping-version-status"] == "outdated"
        old = http.post("/connect", json=body, headers={"X-PocketPing-Version": "1.9.9"})
        assert old.status_code == 426 and old.headers["x-pocketping-version-status"] == "unsupported"
        assert old.json()["error"] == "widget_version_unsupported"
        assert (
            "x-pocketping-version-status"
            not in http.post("/message", json={"sessionId": ok.json()["sessionId"], "content": "x"}).headers
        )


BAD_INPUTS = [
    ("POST", "/connect", b"{not json", 400, "invalid_json"),
    ("POST", "/connect", b"", 400, "invalid_json"),
    ("POST", "/connect", b"[1, 2]", 400, "invalid_json"),
    ("POST", "/connect", b'{"sessionId": null}', 400, "invalid_input"),
    ("POST", "/connect", b'{"visitorId": 42}', 400, "invalid_input"),
    ("POST", "/connect", b'{"visitorId": ""}', 400, "invalid_input"),
    ("POST", "/message", b'{"sessionId": "SID", "content": 5}', 400, "invalid_input"),
    ("POST", "/message", b'{"sessionId": "SID", "content": "   ", "attachmentIds": []}', 400, "invalid_input"),
    ("POST", "/message", b'{"sessionId": "SID", "content": "' + b"x" * 4001 + b'"}', 400, "invalid_input"),
    ("POST", "/message", b'{"sessionId": "SID", "content": "hi", "attachmentIds": "nope"}', 400, "invalid_input"),
    ("POST", "/message", b'{"sessionId": "sess_nope", "content": "hi"}', 404, "session_not_found"),
    ("POST", "/message", b'{"content": "hi"}', 400, "invalid_input"),
    ("GET", "/messages", None, 400, "invalid_input"),
    ("GET", "/messages?sessionId=SID&after=yesterday", None, 400, "invalid_input"),
    ("GET", "/messages?sessionId=sess_nope", None, 404, "session_not_found"),
    ("PATCH", "/message/msg_nope", b'{"sessionId": "SID", "content": "x"}', 404, "message_not_found"),
    ("PATCH", "/message/msg_nope", b'{"sessionId": "SID", "content": ""}', 400, "invalid_input"),
    ("DELETE", "/message/msg_nope", None, 400, "invalid_input"),
    ("POST", "/read", b'{"sessionId": "SID", "messageIds": "m1"}', 400, "invalid_input"),
    ("POST", "/read", b'{"sessionId": "SID", "messageIds": [], "status": "seen"}', 400, "invalid_input"),
    ("POST", "/identify", b'{"sessionId": "SID", "identity": {"email": "a@b.c"}}', 400, "invalid_input"),
    ("POST", "/prechat", b'{"sessionId": "SID"}', 400, "invalid_input"),
    ("POST", "/prechat", b'{"sessionId": "SID", "phone": "0612"}', 400, "invalid_input"),
    ("POST", "/csat", b'{"sessionId": "SID", "score": 9}', 400, "invalid_input"),
    ("POST", "/csat", b'{"sessionId": "SID", "score": "5"}', 400, "invalid_input"),
    ("POST", "/typing", b'{"sessionId": "SID", "sender": "operator"}', 400, "invalid_input"),
    ("GET", "/nowhere", None, 404, "not_found"),
    ("PUT", "/connect", b"{}", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_INPUTS)
def test_bad_input_gets_a_json_4xx_and_changes_nothing(
    pp: PocketPing, http: httpx.Client, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    sid = connect(http)["sessionId"]
    kept = pp.sync.send_message(sid, content="already stored")
    content = body.replace(b"SID", sid.encode()) if body else None
    r = http.request(method, path.replace("SID", sid), content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["error"] == code and err["detail"]
    assert [(m.id, m.content, m.edited_at) for m in pp.sync.get_messages(sid)] == [(kept.id, "already stored", None)]


def test_bad_input_names_the_field(http: httpx.Client) -> None:
    sid = connect(http)["sessionId"]
    r = http.post("/message", json={"sessionId": sid, "content": 5})
    assert r.json()["detail"][0]["field"] == "content"
    r = http.post("/message", json={"sessionId": sid, "content": "x" * 4001})
    assert "4001" in r.json()["detail"] and "4000" in r.json()["detail"]


def test_max_message_length_is_configurable(serve: Any) -> None:
    from pocketping import MemoryStorage

    pp = PocketPing(storage=MemoryStorage(), max_message_length=10)
    with httpx.Client(base_url=serve(pp)) as http:
        sid = connect(http)["sessionId"]
        assert http.post("/message", json={"sessionId": sid, "content": "x" * 10}).status_code == 200
        assert http.post("/message", json={"sessionId": sid, "content": "x" * 11}).status_code == 400


def test_polling_returns_an_edit_made_just_before_the_widgets_own_read(pp: PocketPing, http: httpx.Client) -> None:
    """The widget's polling cursor includes the readAt it sets with its own clock after /read:
    an operator edit made between its last poll and that /read must still reach it."""
    sid = connect(http)["sessionId"]
    reply = pp.sync.send_message(sid, content="first version")
    polled = http.get("/messages", params={"sessionId": sid}).json()["messages"]
    assert [m["content"] for m in polled] == ["first version"]
    pp.sync.edit_message(sid, reply.id, "second version")  # the widget has not polled since
    assert post(http, "/read", {"sessionId": sid, "messageIds": [reply.id], "status": "read"}).json() == {"updated": 1}
    read_at = pp.sync.get_messages(sid)[0].read_at
    assert read_at is not None
    browser_cursor = (read_at + timedelta(milliseconds=2)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    got = http.get("/messages", params={"sessionId": sid, "after": browser_cursor}).json()["messages"]
    assert [(m["id"], m["content"]) for m in got] == [(reply.id, "second version")]
    # nothing else comes back: messages neither changed after the cursor nor read just before it
    later = pp.sync.send_message(sid, content="new")
    got = http.get("/messages", params={"sessionId": sid, "after": polled[0]["timestamp"]}).json()["messages"]
    assert [m["id"] for m in got] == [reply.id, later.id]
