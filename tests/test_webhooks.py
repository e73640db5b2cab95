"""Signed webhooks through the outbox, received by a real endpoint on 127.0.0.1 that verifies
every request with the ``standardwebhooks`` package (and ``pocketping.verify_webhook``) and
deduplicates by ``webhook-id`` as the spec asks."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pocketping import (
    InvalidInput,
    PocketPing,
    SQLiteStorage,
    WebhookEndpoint,
    WebhookVerificationError,
    new_webhook_secret,
    verify_webhook,
)
from pocketping.webhooks import RETRY_SCHEDULE

from .conftest import LiveServer, connect, free_port, wait
from .receivers import Receiver

FAST = (0.3, 0.3, 0.3, 0.3)


def test_every_event_arrives_signed_in_order_and_a_500_is_retried_with_the_same_id(
    receiver: Receiver, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    endpoint = WebhookEndpoint(url=receiver.url, secret=receiver.secret, retry_schedule=FAST)
    pp = PocketPing(storage=SQLiteStorage(tmp_path / "pp.db"), webhooks=[endpoint], rate_limits=None)
    base = serve(pp)
    receiver.answers = [500]  # the first request fails
    with httpx.Client(base_url=base, timeout=10) as http:
        started = time.monotonic()
        sid = connect(http)["sessionId"]
        assert http.post("/message", json={"sessionId": sid, "content": "Hello?"}).status_code == 200
        reply = pp.sync.send_message(sid, content="Hi! How can we help?")
        ident = {"sessionId": sid, "identity": {"id": "u-1", "email": "ada@example.com"}}
        assert http.post("/identify", json=ident).status_code == 200
        pp.sync.run(pp.chat.widget_event(sid, "clicked_pricing", {"plan": "pro"}))
        pp.sync.edit_message(sid, reply.id, "Hi! How may we help?")
        assert http.post("/csat", json={"sessionId": sid, "score": 5}).status_code == 200
        pp.sync.close_session(sid)
    types = wait(lambda: (t := receiver.types()) and len(t) == 8 and t)
    assert types == [
        "session.started",
        "message.created",
        "message.created",
        "visitor.identified",
        "event.received",
        "message.edited",
        "csat.submitted",
        "session.closed",
    ]
    events = receiver.events()
    assert {e["data"].get("sessionId", e["data"].get("session", {}).get("id")) for e in events} == {sid}
    created = [e["data"] for e in events if e["type"] == "message.created"]
    assert [(d["sender"], d["source"], d["message"]["content"]) for d in created] == [
        ("visitor", "widget", "Hello?"),
        ("operator", "api", "Hi! How can we help?"),
    ]
    assert events[6]["data"]["rating"] == {"score": 5}
    assert all(set(e) == {"id", "type", "timestamp", "data"} for e in events)
    # The first attempt failed: the retry carried the same webhook-id and was accepted once.
    first_id = receiver.attempts[0][1]
    tries = [(t, status) for t, i, status in receiver.attempts if i == first_id]
    assert [status for _, status in tries] == [500, 204]
    assert len(receiver.attempts) == 9 and receiver.rejected == 0
    print(
        f"\ntimeline: first attempt +{tries[0][0] - started:.2f} s (500), retry +{tries[1][0] - started:.2f} s "
        f"(accepted), 8th event accepted +{receiver.attempts[-1][0] - started:.2f} s"
    )
    assert pp.sync.run(pp.outbox.drain(5))


def test_queued_events_survive_a_restart_and_are_delivered_once(tmp_path: Path) -> None:
    secret = new_webhook_secret()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"  # nothing listens yet: connections are refused
    db = tmp_path / "pp.db"

    def app() -> PocketPing:
        endpoint = WebhookEndpoint(url=url, secret=secret, retry_schedule=FAST * 10)
        return PocketPing(storage=SQLiteStorage(db), webhooks=[endpoint], rate_limits=None)

    first = app()
    one = LiveServer(first.asgi_app).start()
    try:
        with httpx.Client(base_url=one.url, timeout=10) as http:
            sid = connect(http)["sessionId"]
            for i in range(3):
                assert http.post("/message", json={"sessionId": sid, "content": f"m{i}"}).status_code == 200
        time.sleep(0.8)  # a few refused attempts
    finally:
        one.stop()
    receiver = Receiver(secret, port=port)
    receiver.server.start()
    second = app()
    two = LiveServer(second.asgi_app).start()
    try:
        wait(lambda: len(receiver.types()) == 4)
        time.sleep(1.0)  # nothing more comes
        assert receiver.types() == ["session.started", "message.created", "message.created", "message.created"]
        assert [e["data"]["message"]["content"] for e in receiver.events()[1:]] == ["m0", "m1", "m2"]
        assert len({i for _, i, _ in receiver.attempts}) == len(receiver.attempts) == 4  # once each
    finally:
        two.stop()
        receiver.server.stop()


def test_410_turns_the_endpoint_off(
    receiver: Receiver, serve: Callable[[PocketPing], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = WebhookEndpoint(url=receiver.url, secret=receiver.secret, events=["message.created"])
    pp = PocketPing(storage=SQLiteStorage(tmp_path / "pp.db"), webhooks=[endpoint], rate_limits=None)
    base = serve(pp)
    receiver.answers = [410]
    with caplog.at_level(logging.ERROR, logger="pocketping.webhooks"), httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]  # session.started is filtered out
        for text in ("one", "two", "three"):
            assert http.post("/message", json={"sessionId": sid, "content": text}).status_code == 200
        assert pp.sync.run(pp.outbox.drain(10))
    assert [status for _, _, status in receiver.attempts] == [410]
    assert any("410 Gone" in r.getMessage() for r in caplog.records)
    assert receiver.secret not in caplog.text


def test_signatures_secrets_and_settings() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_") and len(secret) > 40 and secret != new_webhook_secret()
    body = json.dumps({"id": "msg_1", "type": "session.started", "timestamp": "2026-12-02T00:00:00Z", "data": {}})
    now = int(time.time())
    signed_content = f"msg_1.{now}.{body}".encode()
    from base64 import b64decode, b64encode

    key = b64decode(secret.removeprefix("whsec_"))
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": "v1," + b64encode(hmac.new(key, signed_content, hashlib.sha256).digest()).decode(),
        "X-PocketPing-Signature": "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest(),
    }
    assert verify_webhook(body, headers, secret)["id"] == "msg_1"
    for broken in (
        {**headers, "webhook-timestamp": str(now - 600)},
        {**headers, "X-PocketPing-Signature": "sha256=00"},
        {k: v for k, v in headers.items() if k != "X-PocketPing-Signature"},
    ):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(body, broken, secret)
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify_webhook(body.replace("session", "Session"), headers, secret)
    for bad in ("s3cret", "whsec_!!!", "whsec_" + b64encode(b"short").decode()):
        with pytest.raises(InvalidInput, match="new_webhook_secret"):
            WebhookEndpoint(url="https://example.com/hook", secret=bad)
    with pytest.raises(InvalidInput, match="webhook_secret"):
        PocketPing(webhook_url="https://example.com/hook")
    with pytest.raises(InvalidInput, match="events"):
        WebhookEndpoint(url="https://example.com/hook", secret=secret, events=["message.sent"])
    assert RETRY_SCHEDULE[0] <= 60 and 2.5 * 86400 <= sum(RETRY_SCHEDULE) <= 3.5 * 86400
    assert secret not in repr(WebhookEndpoint(url="https://example.com/hook", secret=secret))
