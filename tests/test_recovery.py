"""A process killed between storing a message and queueing its jobs: the next start gives the
recent messages to every outbox listener again, and each queues what is missing, once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from pocketping import AIResponder, EmailNotifier, PocketPing, SQLiteStorage, WebhookEndpoint

from .conftest import LiveServer, connect, mounted, wait
from .fakes.openai import FakeOpenAI
from .receivers import Mailbox, Receiver


def test_messages_stored_but_never_queued_are_queued_once_at_the_next_start(
    tmp_path: Path, receiver: Receiver, smtp: tuple[Mailbox, int], llm: FakeOpenAI
) -> None:
    box, port = smtp
    db = tmp_path / "pp.db"
    # A process with nothing configured stands for one killed before queueing: the messages
    # are stored, no job is.
    bare = PocketPing(storage=SQLiteStorage(db), rate_limits=None)
    first = LiveServer(mounted(bare)).start()
    with httpx.Client(base_url=first.url + "/pocketping") as http:
        asking = connect(http)["sessionId"]
        assert http.post("/message", json={"sessionId": asking, "content": "Anyone there?"}).status_code == 200
        left = connect(http, visitor_id="visitor-two-0001", identity={"id": "u2", "email": "bo@example.org"})
        bare.sync.send_message(left["sessionId"], content="We replied while you were away")
    first.stop()

    def configured() -> PocketPing:
        return PocketPing(
            storage=SQLiteStorage(db),
            rate_limits=None,
            public_url="http://127.0.0.1/pocketping",
            webhooks=[WebhookEndpoint(url=receiver.url, secret=receiver.secret, events=["message.created"])],
            email=EmailNotifier(host="127.0.0.1", port=port, sender="s@example.com", starttls=False, unread_after=0),
            ai=AIResponder(base_url=llm.url + "/v1", model="m", delay=0),
        )

    llm.script = ["Yes, here."]
    for restart in range(2):  # a second restart queues nothing new
        pp = configured()
        server = LiveServer(mounted(pp)).start()
        try:
            created: Any = wait(lambda: len(receiver.events()) >= 3, 10)
            wait(lambda: box.received(), 10)
            wait(lambda app=pp: [m for m in app.sync.get_messages(asking) if m.sender == "ai"], 10)
            time.sleep(1.0)
        finally:
            server.stop()
        contents = sorted(e["data"]["message"]["content"] for e in receiver.events())
        assert created and contents == ["Anyone there?", "We replied while you were away", "Yes, here."], restart
        assert len(box.received()) == 1 and len(llm.requests()) == 1 and len(receiver.attempts) == 3
    assert "We replied while you were away" in box.received()[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
