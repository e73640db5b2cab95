"""``bridge_url`` mode end to end: the SDK (PocketPing(bridge_url=...)) on one real server, our
bridge server on another, the fake Telegram behind it. Signed both ways."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pocketping import MemoryStorage, PocketPing, TelegramBridge
from pocketping.bridge_server import build_bridge_server
from pocketping.bridges.remote import auth_headers, sign

from .conftest import LiveServer, free_port, mounted
from .fakes.harness import Visitor, fast, stored
from .fakes.telegram import CHAT_ID, FakeTelegram

KEY = "shared-bridge-key"
SECRET = "tg-secret"


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    tg = FakeTelegram().start()
    sdk_port = free_port()
    bridge = fast(TelegramBridge(tg.token, CHAT_ID, webhook_secret=SECRET, api_base=tg.url))
    app, server_pp = build_bridge_server(
        [bridge],
        backend_url=f"http://127.0.0.1:{sdk_port}/pocketping/bridge/webhook",
        api_key=KEY,
        storage=MemoryStorage(),
    )
    for b in server_pp.bridges:
        fast(b)
    server = LiveServer(app).start()
    monkeypatch.setenv("POCKETPING_BRIDGE_API_KEY", KEY)
    pp = PocketPing(bridge_url=server.url, storage=MemoryStorage(), sse_heartbeat=0.5)
    fast(pp.bridges[0])
    sdk = LiveServer(mounted(pp), port=sdk_port).start()
    try:
        yield {"tg": tg, "pp": pp, "server": server.url, "base": sdk.url + "/pocketping", "server_pp": server_pp}
    finally:
        sdk.stop()
        server.stop()
        tg.stop()


def texts(tg: FakeTelegram) -> list[str]:
    return [b["text"] for b in tg.sent("sendMessage")]


def test_round_trip_through_the_bridge_server(setup: dict[str, Any]) -> None:
    tg, pp, base = setup["tg"], setup["pp"], setup["base"]
    v = Visitor(base, identity={"id": "u1", "name": "Ada"})
    try:
        header = tg.wait_for(lambda: texts(tg))[0]
        assert "🆕 New conversation" in header and "https://shop.example/pricing?plan=pro" in header
        v.say("Hello via the bridge server <3")
        tg.wait_for(lambda: "<b>Ada:</b>\nHello via the bridge server &lt;3" in texts(tg))

        update = tg.operator_update(1000, "Hi Ada!")
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        assert (
            httpx.post(f"{setup['server']}/webhooks/telegram", json=update, headers=headers, timeout=10).status_code
            == 200
        )
        reply = v.next_operator_message()
        assert reply["content"] == "Hi Ada!"
        ops = stored(pp, v.session_id, "operator")
        assert [m.metadata["sourceBridge"] for m in ops] == ["telegram"] and ops[0].metadata["operatorName"] == "Alice"

        # A message sent from the SDK's code shows in the topic; the operator's edit reaches the widget.
        pp.sync.send_message(v.session_id, "Sent from the backend", type="operator")
        tg.wait_for(lambda: [t for t in texts(tg) if "Sent from the backend" in t])
        edit = tg.operator_update(1000, "Hi Ada! (edited)", edited_id=update["message"]["message_id"])
        httpx.post(f"{setup['server']}/webhooks/telegram", json=edit, headers=headers, timeout=10)
        assert v.stream.next(type="message_edited")["json"]["data"]["content"] == "Hi Ada! (edited)"

        # /close in the topic closes the session in the SDK too.
        httpx.post(
            f"{setup['server']}/webhooks/telegram", json=tg.operator_update(1000, "/close"), headers=headers, timeout=10
        )
        assert v.stream.next(type="event", timeout=10)["json"]["data"]["name"] == "session_closed"
        deadline = time.monotonic() + 5
        while pp.sync.get_session(v.session_id).status != "closed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pp.sync.get_session(v.session_id).status == "closed"
        assert len(tg.sent("createForumTopic")) == 1
    finally:
        v.close()


def test_both_directions_reject_bad_keys_and_signatures(setup: dict[str, Any]) -> None:
    server, base, pp = setup["server"], setup["base"], setup["pp"]
    assert httpx.get(f"{server}/health", timeout=10).json() == {"status": "ok", "bridges": ["telegram"]}
    event = {"type": "new_session", "session": {"id": "sess_x", "visitorId": "v", "createdAt": "2026-01-01T00:00:00Z"}}
    body = json.dumps(event).encode()
    assert httpx.post(f"{server}/api/events", content=body, timeout=10).status_code == 401
    bad = {**auth_headers(KEY, body), "Authorization": "Bearer wrong"}
    assert httpx.post(f"{server}/api/events", content=body, headers=bad, timeout=10).status_code == 401
    stale = {**auth_headers(KEY, body), "X-PocketPing-Signature": sign(KEY, body, time.time() - 600)}
    assert httpx.post(f"{server}/api/events", content=body, headers=stale, timeout=10).status_code == 401
    unknown = json.dumps({"type": "nope"}).encode()
    r = httpx.post(f"{server}/api/events", content=unknown, headers=auth_headers(KEY, unknown), timeout=10)
    assert r.status_code == 400 and r.json() == {"error": "unknown_event", "detail": "unknown event type nope"}

    v = Visitor(base)
    try:
        forged = json.dumps(
            {"type": "operator_message", "sessionId": v.session_id, "content": "forged", "messageId": "telegram:1"}
        ).encode()
        tampered = {**auth_headers(KEY, forged), "X-PocketPing-Signature": sign(KEY, b"other body")}
        assert httpx.post(f"{base}/bridge/webhook", content=forged, timeout=10).status_code == 401
        assert httpx.post(f"{base}/bridge/webhook", content=forged, headers=tampered, timeout=10).status_code == 401
        assert stored(pp, v.session_id, "operator") == []
        good = auth_headers(KEY, forged)
        assert httpx.post(f"{base}/bridge/webhook", content=forged, headers=good, timeout=10).status_code == 200
        assert httpx.post(f"{base}/bridge/webhook", content=forged, headers=good, timeout=10).status_code == 200
        assert [m.content for m in stored(pp, v.session_id, "operator")] == ["forged"]  # deduplicated by messageId
    finally:
        v.close()


def test_pocketping_bridge_command_serves_and_stops(tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys

    tg = FakeTelegram().start()
    port = free_port()
    env = {
        **os.environ,
        "POCKETPING_TELEGRAM_BOT_TOKEN": tg.token,
        "POCKETPING_TELEGRAM_CHAT_ID": str(CHAT_ID),
        "POCKETPING_TELEGRAM_WEBHOOK_SECRET": SECRET,
        "POCKETPING_TELEGRAM_API_BASE": tg.url,
        "POCKETPING_BRIDGE_API_KEY": KEY,
    }
    cmd = [sys.executable, "-m", "pocketping.cli", "bridge", "--port", str(port), "--db", str(tmp_path / "b.db")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
        assert r.json() == {"status": "ok", "bridges": ["telegram"]}
        event = {
            "type": "new_session",
            "session": {"id": "sess_cli", "visitorId": "v1", "metadata": {"url": "https://x.example/"}},
        }
        body = json.dumps(event).encode()
        assert (
            httpx.post(
                f"http://127.0.0.1:{port}/api/events", content=body, headers=auth_headers(KEY, body), timeout=10
            ).status_code
            == 200
        )
        tg.wait_for(lambda: [t for t in texts(tg) if "https://x.example/" in t])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)  # reap it and close its pipes
        tg.stop()
    empty = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPING_")}
    done = subprocess.run(
        [sys.executable, "-m", "pocketping.cli", "bridge"], env=empty, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "no bridge configured" in done.stderr
