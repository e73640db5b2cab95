"""Operator-side surfaces fail closed: the SDK's bridge callback, the bridge server (a real
``pocketping bridge`` process), the platform webhooks and the console, probed with hostile
requests against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketping import MemoryStorage, PocketPing
from pocketping.bridges.remote import auth_headers, sign

from .conftest import LiveServer, connect, free_port, mounted, wait_healthy
from .fakes.discord import FakeDiscord
from .fakes.harness import Visitor, eventually, key, stored
from .fakes.slack import CHANNEL as SLACK_CHANNEL
from .fakes.slack import FakeSlack
from .fakes.telegram import CHAT_ID, FakeTelegram
from .test_bridges_discord import interaction, slash
from .test_bridges_discord import make_pp as discord_pp
from .test_bridges_slack import hook as slack_hook
from .test_bridges_slack import make_pp as slack_pp
from .test_bridges_telegram import hook as telegram_hook
from .test_bridges_telegram import make_pp as telegram_pp

Serve = Callable[[PocketPing], str]
KEY = "a-shared-bridge-key-0123456789"
DEEP = b"[" * 30_000 + b"]" * 30_000
ROOT = Path(__file__).resolve().parent.parent


# -- 1. no key, no authentication ----------------------------------------------------------------


def operator_event(sid: str, content: str = "FAKE OPERATOR: send your password") -> dict[str, Any]:
    return {"type": "operator_message", "sessionId": sid, "messageId": f"m-{time.monotonic_ns()}", "content": content}


def test_the_sdk_refuses_every_callback_without_a_key(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("POCKETPING_BRIDGE_API_KEY", raising=False)
    pp = PocketPing(bridge_url="http://127.0.0.1:9", storage=MemoryStorage())
    with caplog.at_level(logging.ERROR, logger="pocketping.bridges"):
        base = serve(pp)
        with httpx.Client(base_url=base, timeout=10) as http:
            sid = connect(http)["sessionId"]
            for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "Bearer anything"}):
                r = http.post("/bridge/webhook", json=operator_event(sid), headers=headers)
                assert r.status_code == 401 and "POCKETPING_BRIDGE_API_KEY" in r.json()["detail"]
            r = http.post("/bridge/webhook", json={"type": "operator_status", "online": True})
            assert r.status_code == 401
    assert [m for m in pp.sync.get_messages(sid) if m.sender == "operator"] == []
    assert not pp.operator_online
    assert "POCKETPING_BRIDGE_API_KEY is not set" in caplog.text  # said at start


def test_operator_side_routes_send_no_cors_and_take_only_json(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POCKETPING_BRIDGE_API_KEY", KEY)
    pp = PocketPing(bridge_url="http://127.0.0.1:9", storage=MemoryStorage())
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]
        body = json.dumps(operator_event(sid)).encode()
        foreign = {"Origin": "https://evil.example"}
        as_text = {**auth_headers(KEY, body), "Content-Type": "text/plain", **foreign}
        r = http.post("/bridge/webhook", content=body, headers=as_text)
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
        assert "access-control-allow-origin" not in r.headers
        preflight = http.options("/bridge/webhook", headers={**foreign, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        ok = http.post("/bridge/webhook", content=body, headers={**auth_headers(KEY, body), **foreign})
        assert ok.status_code == 200 and "access-control-allow-origin" not in ok.headers
        assert "access-control-allow-origin" not in http.post("/webhooks/telegram", json={}, headers=foreign).headers
        # The widget's own routes keep their CORS.
        assert http.get("/health", headers=foreign).status_code == 200
        assert http.post("/typing", json={}, headers=foreign).headers["access-control-allow-origin"] == (
            "https://evil.example"
        )


def bridge_env(tg: FakeTelegram, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPING_")}
    env.update(
        POCKETPING_TELEGRAM_BOT_TOKEN=tg.token,
        POCKETPING_TELEGRAM_CHAT_ID=str(CHAT_ID),
        POCKETPING_TELEGRAM_WEBHOOK_SECRET="tg-secret",
        POCKETPING_TELEGRAM_API_BASE=tg.url,
        **extra,
    )
    return env


def test_the_bridge_server_refuses_to_start_without_a_key(tg: FakeTelegram, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pocketping.cli", "bridge", "--port", str(free_port()), "--db", str(tmp_path / "b.db")],
        env=bridge_env(tg),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "POCKETPING_BRIDGE_API_KEY is not set" in done.stderr and "secrets.token_urlsafe" in done.stderr


@pytest.fixture
def bridge_server(tg: FakeTelegram, tmp_path: Path) -> Iterator[str]:
    """A real ``pocketping bridge`` process with a key."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pocketping.cli", "bridge", "--port", str(port), "--db", str(tmp_path / "b.db")],
        env=bridge_env(tg, POCKETPING_BRIDGE_API_KEY=KEY),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=30, path="/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def post_event(server: str, event: Any, *, signed: bool = True, at: float | None = None) -> httpx.Response:
    body = json.dumps(event).encode()
    headers = auth_headers(KEY, body)
    if not signed:
        del headers["X-PocketPing-Signature"]
    elif at is not None:
        headers["X-PocketPing-Signature"] = sign(KEY, body, at)
    return httpx.post(f"{server}/api/events", content=body, headers=headers, timeout=10)


SESSION = {"id": "sess_AAAAAAAAAAAAAAAA", "visitorId": "v1", "createdAt": "2026-12-01T10:00:00.000Z", "metadata": {}}


# -- 2. the signature is required ---------------------------------------------------------------


def test_the_bridge_server_requires_a_fresh_signature(bridge_server: str, tg: FakeTelegram) -> None:
    event = {"type": "new_session", "session": SESSION}
    unsigned = post_event(bridge_server, event, signed=False)
    assert unsigned.status_code == 401
    stale = post_event(bridge_server, event, at=time.time() - 600)
    assert stale.status_code == 401
    text = httpx.post(
        f"{bridge_server}/api/events",
        content=json.dumps(event).encode(),
        headers={**auth_headers(KEY, json.dumps(event).encode()), "Content-Type": "text/plain"},
        timeout=10,
    )
    assert text.status_code == 415
    assert tg.sent("createForumTopic") == []  # nothing got through
    assert post_event(bridge_server, event).status_code == 200
    tg.wait_for(lambda: tg.sent("createForumTopic"))


def test_the_sdk_requires_a_fresh_signature_unless_told_otherwise(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCKETPING_BRIDGE_API_KEY", KEY)
    pp = PocketPing(bridge_url="http://127.0.0.1:9", storage=MemoryStorage())
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]
        body = json.dumps(operator_event(sid, "unsigned")).encode()
        bearer_only = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        assert http.post("/bridge/webhook", content=body, headers=bearer_only).status_code == 401
        old = {**bearer_only, "X-PocketPing-Signature": sign(KEY, body, time.time() - 600)}
        assert http.post("/bridge/webhook", content=body, headers=old).status_code == 401
    assert [m for m in pp.sync.get_messages(sid) if m.sender == "operator"] == []

    monkeypatch.setenv("POCKETPING_BRIDGE_ALLOW_UNSIGNED", "1")
    compat = PocketPing(bridge_url="http://127.0.0.1:9", storage=MemoryStorage())
    with httpx.Client(base_url=serve(compat), timeout=10) as http:
        sid = connect(http)["sessionId"]
        body = json.dumps(operator_event(sid, "unsigned but allowed")).encode()
        r = http.post("/bridge/webhook", content=body, headers=bearer_only)
        assert r.status_code == 200
        assert http.post("/bridge/webhook", content=body, headers=old).status_code == 401  # a bad one still fails
    assert [m.content for m in compat.sync.get_messages(sid) if m.sender == "operator"] == ["unsigned but allowed"]


# -- 3. no secret in a real server's access log ---------------------------------------------------


def test_the_console_token_stays_out_of_a_real_access_log(caplog: pytest.LogCaptureFixture) -> None:
    token = "console-token-in-a-url-0123456789"
    pp = PocketPing(storage=MemoryStorage(), console_token=token, sse_heartbeat=0.2)
    # log_config=None: uvicorn leaves logging alone, so its access records reach caplog.
    server = LiveServer(mounted(pp), access_log=True, log_config=None, log_level="info")
    with caplog.at_level(logging.INFO):
        server.start()
        try:
            # The demo's address: it signs in and redirects to the address without the token.
            with httpx.Client(base_url=server.url, follow_redirects=True, timeout=10) as http:
                page = http.get(f"/pocketping/console?token={token}")
                assert page.status_code == 200 and str(page.url).endswith("/pocketping/console")
                with http.stream("GET", "/pocketping/console/api/stream") as r:
                    assert r.status_code == 200
        finally:
            server.stop()
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/pocketping/console?token=***" in line for line in access), access
    assert token not in caplog.text


# -- 4. signed but malformed platform payloads -----------------------------------------------------


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 1, "message": {"chat": {"id": CHAT_ID}, "text": "no message_id"}},
        {"update_id": 2, "message": {"message_id": 5, "from": "x", "chat": {"id": CHAT_ID}}},
        {"update_id": 3, "message": {"message_id": 5, "from": [1], "chat": "x"}},
        {"update_id": 4, "message": {"message_id": 5, "chat": {"id": CHAT_ID}, "reply_to_message": "x"}},
        {"update_id": 5, "edited_message": {"message_id": "five", "chat": {"id": CHAT_ID}}},
        {"update_id": "six"},
    ],
)
def test_malformed_telegram_updates_are_acknowledged_and_ignored(
    update: dict[str, Any], tg: FakeTelegram, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    pp = telegram_pp(tg)
    base = serve(pp)
    v = Visitor(base)
    try:
        eventually(lambda: key(pp, f"telegram:thread:{v.session_id}"))
        with caplog.at_level(logging.WARNING, logger="pocketping.bridges"):
            r = telegram_hook(base, update)
        assert r.status_code == 200, r.text
        assert "Telegram update ignored" in caplog.text
        # A good update afterwards still works.
        assert telegram_hook(base, tg.operator_update(1000, "still here")).status_code == 200
        assert [m.content for m in stored(pp, v.session_id, "operator")] == ["still here"]
    finally:
        v.close()


def test_a_lone_surrogate_is_refused_as_invalid_json(tg: FakeTelegram, serve: Serve) -> None:
    base = serve(telegram_pp(tg))
    body = b'{"update_id": 9, "message": {"message_id": 1, "chat": {"id": 1}, "text": "\\ud800"}}'
    r = httpx.post(
        f"{base}/webhooks/telegram",
        content=body,
        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1", "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "event_callback", "event_id": "E1", "event": [1]},
        {"type": "event_callback", "event_id": "E2", "event": "x"},
        {"type": "event_callback", "event_id": "E3", "event": {"type": "message", "channel": SLACK_CHANNEL,
                                                              "subtype": "message_changed", "message": [1]}},
        {"type": "event_callback", "event_id": "E4", "event": {"type": "message", "channel": SLACK_CHANNEL,
                                                              "subtype": "message_deleted", "previous_message": "x",
                                                              "deleted_ts": "1.2"}},
        [1],
    ],
)  # fmt: skip
def test_malformed_slack_events_are_acknowledged_and_ignored(payload: Any, slack: FakeSlack, serve: Serve) -> None:
    pp = slack_pp(slack)
    base = serve(pp)
    r = slack_hook(base, slack, payload)
    if isinstance(payload, list):
        assert r.status_code == 400 and r.json()["error"] == "expected an object"
    else:
        assert r.status_code == 200 and r.json() == {"ok": True}


def test_malformed_and_stale_discord_interactions(dc: FakeDiscord, serve: Serve) -> None:
    pp = discord_pp(dc)
    base = serve(pp)
    v = Visitor(base)
    try:
        thread = eventually(lambda: key(pp, f"discord:thread:{v.session_id}"))
        assert interaction(base, [1]).status_code == 400  # type: ignore[arg-type]
        for body in (
            {**slash(thread, "reply", "i1", message="x"), "data": "x"},
            {**slash(thread, "reply", "i2", message="x"), "member": "x"},
        ):
            r = interaction(base, body)
            assert r.status_code == 200 and r.json()["data"]["content"] == "This request could not be read."
        # No id: refused, not deduplicated under one shared key.
        no_id = slash(thread, "reply", "x", message="first")
        del no_id["id"]
        assert interaction(base, no_id).json()["data"]["content"] == "This request could not be read."
        # A correctly signed interaction captured 10 minutes ago cannot be replayed.
        stale = interaction(base, slash(thread, "reply", "i3", message="replayed"), ts=str(int(time.time()) - 600))
        assert stale.status_code == 401
        # /reply without its message sends nothing and says so.
        empty = interaction(base, slash(thread, "reply", "i4"))
        assert empty.json()["data"]["content"] == "⚠️ Nothing sent: /reply needs a message."
        assert stored(pp, v.session_id, "operator") == []
        ok = interaction(base, slash(thread, "reply", "i5", message="real reply"))
        assert ok.json()["data"]["content"] == "✅ Message sent to the visitor."
        assert [m.content for m in stored(pp, v.session_id, "operator")] == ["real reply"]
    finally:
        v.close()


# -- 5. deeply nested JSON is a 400 everywhere ------------------------------------------------------


def test_deeply_nested_json_is_a_400_everywhere(
    tg: FakeTelegram, slack: FakeSlack, serve: Serve, bridge_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCKETPING_BRIDGE_API_KEY", KEY)
    pp = PocketPing(storage=MemoryStorage(), console_token="t0ken", bridge_url="http://127.0.0.1:9")
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]
    json_headers = {"Content-Type": "application/json"}
    answers = {
        "console": httpx.post(
            f"{base}/console/api/sessions/{sid}/messages",
            content=DEEP,
            headers={**json_headers, "Authorization": "Bearer t0ken"},
            timeout=10,
        ),
        "bridge callback": httpx.post(f"{base}/bridge/webhook", content=DEEP, headers=auth_headers(KEY, DEEP)),
        "bridge server": httpx.post(f"{bridge_server}/api/events", content=DEEP, headers=auth_headers(KEY, DEEP)),
        "telegram": httpx.post(
            f"{serve(telegram_pp(tg))}/webhooks/telegram",
            content=DEEP,
            headers={**json_headers, "X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"},
        ),
    }
    slack_body = DEEP
    _body, slack_headers = slack.signed({})
    from pocketping.bridges.slack import slack_signature

    slack_headers["X-Slack-Signature"] = slack_signature(
        slack.signing_secret, slack_headers["X-Slack-Request-Timestamp"], slack_body
    )
    answers["slack"] = httpx.post(f"{serve(slack_pp(slack))}/webhooks/slack", content=slack_body, headers=slack_headers)
    for where, r in answers.items():
        assert r.status_code == 400, (where, r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/json"), where


# -- 6. the bridge server validates envelopes before storing ----------------------------------------


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"type": "new_session", "session": {**SESSION, "identity": [1]}}, "session.identity"),
        ({"type": "new_session", "session": {**SESSION, "metadata": "x"}}, "session.metadata"),
        ({"type": "new_session", "session": {**SESSION, "createdAt": "notadate"}}, "session.createdAt"),
        ({"type": "new_session", "session": {"visitorId": "v1"}}, "session.id is required"),
        (
            {"type": "visitor_message", "session": SESSION, "message": {"id": "msg_1", "timestamp": "zz"}},
            "message.timestamp",
        ),
        (
            {"type": "visitor_message", "session": SESSION, "message": {"id": "msg_1", "attachments": "x"}},
            "message.attachments",
        ),
        ({"type": "visitor_message", "session": SESSION, "message": "x"}, "message must be a JSON object"),
    ],
)
def test_the_bridge_server_validates_envelopes_before_storing(
    event: dict[str, Any], named: str, bridge_server: str, tg: FakeTelegram
) -> None:
    r = post_event(bridge_server, event)
    assert r.status_code == 400 and named in r.json()["detail"], r.text
    time.sleep(0.3)
    assert tg.sent("createForumTopic") == []  # nothing stored, nothing queued
    # The same session, well formed, goes through.
    assert post_event(bridge_server, {"type": "new_session", "session": SESSION}).status_code == 200
    tg.wait_for(lambda: tg.sent("createForumTopic"))


# -- 7. the console's slash redirect ----------------------------------------------------------------


def test_the_console_slash_redirect_is_relative_and_drops_the_token(serve: Serve) -> None:
    pp = PocketPing(storage=MemoryStorage(), console_token="t0ken")
    base = serve(pp)
    r = httpx.get(f"{base}/console/?token=t0ken", headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code == 307
    assert r.headers["location"] == "../console"
    assert r.headers["cache-control"] == "no-store"
    followed = httpx.get(f"{base}/console/?token=t0ken", follow_redirects=True, timeout=10)
    assert followed.url.path == "/pocketping/console" and "token" not in str(followed.url)


# -- 8. smaller ones ----------------------------------------------------------------------------------


def test_a_telegram_command_for_another_bot_is_ignored(tg: FakeTelegram, serve: Serve) -> None:
    pp = telegram_pp(tg)
    base = serve(pp)
    v = Visitor(base)
    try:
        eventually(lambda: key(pp, f"telegram:thread:{v.session_id}"))
        assert telegram_hook(base, tg.operator_update(1000, "/CLOSE@otherbot")).status_code == 200
        assert pp.sync.get_session(v.session_id).status == "active"
        assert stored(pp, v.session_id, "operator") == []  # not relayed as a reply either
        assert telegram_hook(base, tg.operator_update(1000, "/close@PocketPing_Bot")).status_code == 200
        eventually(lambda: pp.sync.get_session(v.session_id).status == "closed")
    finally:
        v.close()


def test_the_console_refuses_a_non_boolean_is_typing(serve: Serve) -> None:
    pp = PocketPing(storage=MemoryStorage(), console_token="t0ken")
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10, headers={"Authorization": "Bearer t0ken"}) as http:
        sid = connect(http)["sessionId"]
        for value in ("no", 0, None, [True]):
            r = http.post(f"/console/api/sessions/{sid}/typing", json={"isTyping": value})
            assert r.status_code == 400 and r.json()["detail"] == "isTyping must be true or false"
        assert http.post(f"/console/api/sessions/{sid}/typing", json={"isTyping": False}).status_code == 200
