"""Delivery guarantees shared by every bridge, exercised with the Telegram fake: refused calls
do not block a session, deleted threads are reopened, slow platforms never slow the visitor,
backoff stays bounded, presence commands, and storages without the outbox capability."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from pocketping import MemoryStorage, PocketPing, TelegramBridge
from pocketping.bridges.queue import BridgeHub

from .fakes.harness import Visitor, drained, fast, key
from .fakes.telegram import CHAT_ID, FakeTelegram

SECRET = "s3cret"


def make_pp(tg: FakeTelegram, storage: Any = None) -> PocketPing:
    b = fast(TelegramBridge(tg.token, CHAT_ID, webhook_secret=SECRET, api_base=tg.url))
    return PocketPing(storage=storage or MemoryStorage(), bridges=[b], sse_heartbeat=0.5)


def texts(tg: FakeTelegram) -> list[str]:
    return [b["text"] for b in tg.sent("sendMessage")]


def test_refused_call_is_dropped_and_the_line_goes_on(
    tg: FakeTelegram, serve: Callable[[PocketPing], str], caplog: pytest.LogCaptureFixture
) -> None:
    pp = make_pp(tg)
    v = Visitor(serve(pp))
    try:
        tg.wait_for(lambda: texts(tg))
        tg.fail(1, 403, method="sendMessage")  # e.g. the bot lost its rights for a moment
        with caplog.at_level(logging.ERROR, logger="pocketping.bridges"):
            v.say("refused")
            v.say("next one")
            tg.wait_for(lambda: [t for t in texts(tg) if t.endswith("next one")])
        assert not [t for t in texts(tg) if t.endswith("refused")]
        refused = [r for r in caplog.records if "refused by the platform" in r.getMessage()]
        assert refused and refused[0].bridge == "telegram" and refused[0].session_id == v.session_id  # type: ignore[attr-defined]
    finally:
        v.close()


def test_deleted_topic_is_reopened_and_the_message_delivered(
    tg: FakeTelegram, serve: Callable[[PocketPing], str]
) -> None:
    pp = make_pp(tg)
    v = Visitor(serve(pp))
    try:
        tg.wait_for(lambda: texts(tg))
        with tg.lock:
            tg.topics.clear()  # an admin deleted the topic
        v.say("after the topic was deleted")
        # The fake records the refused attempt in the old topic too: wait for the one in the new.
        tg.wait_for(
            lambda: [
                b
                for b in tg.sent("sendMessage")
                if b.get("message_thread_id") == 1001 and b["text"].endswith("after the topic was deleted")
            ]
        )
        assert len(tg.sent("createForumTopic")) == 2
        assert key(pp, f"telegram:thread:{v.session_id}") == "1001"
        assert key(pp, "telegram:session:1000") is None and key(pp, "telegram:session:1001") == v.session_id
    finally:
        v.close()


def test_slow_or_down_platform_never_slows_the_visitor(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(tg)
    v = Visitor(serve(pp))
    try:
        tg.wait_for(lambda: texts(tg))
        tg.latency = 2.0
        started = time.monotonic()
        for i in range(5):
            v.say(f"message {i}")
        took = time.monotonic() - started
        assert took < 1.5, f"5 POSTs took {took:.2f} s against a platform answering in 2 s"
        tg.latency = 0.0
        tg.wait_for(lambda: [t for t in texts(tg) if t.endswith("message 4")], timeout=15)
        assert [t.rsplit("\n", 1)[1] for t in texts(tg)[1:]] == [f"message {i}" for i in range(5)]
        assert drained(pp)
    finally:
        v.close()


def test_default_backoff_is_exponential_and_capped_for_20_s_recovery() -> None:
    bridge = TelegramBridge("1:x", CHAT_ID)
    hub = BridgeHub(PocketPing(storage=MemoryStorage()), [bridge])
    delays = [hub.backoff(bridge, n) for n in range(12)]
    assert delays[0] <= 0.5 and delays[3] > delays[0]
    assert max(delays) <= 15.0  # next try at most 15 s after the platform is back
    assert sum(delays[:5]) < 20.0


def test_online_offline_commands_set_presence(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    import httpx

    pp = make_pp(tg)
    base = serve(pp)
    v = Visitor(base)
    try:
        tg.wait_for(lambda: texts(tg))
        hook = f"{base}/webhooks/telegram"
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        httpx.post(hook, json=tg.operator_update(1000, "/online"), headers=headers, timeout=10)
        assert v.stream.next(type="presence")["json"]["data"] == {"online": True}
        httpx.post(hook, json=tg.operator_update(1000, "/offline"), headers=headers, timeout=10)
        assert v.stream.next(type="presence")["json"]["data"] == {"online": False}
        tg.wait_for(lambda: "Operators are now shown as offline." in texts(tg))
        assert pp.sync.get_messages(v.session_id) == []
    finally:
        v.close()


class SeedStorage:
    """A storage with only the seed's four methods (no outbox capability)."""

    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}
        self.messages: dict[str, list[Any]] = {}

    def create_session(self, session: Any) -> None:
        self.sessions[session.id] = session

    def get_session(self, session_id: str) -> Any:
        return self.sessions.get(session_id)

    def save_message(self, session_id: str, message: Any) -> None:
        self.messages.setdefault(session_id, []).append(message)

    def get_messages(self, session_id: str) -> list[Any]:
        return list(self.messages.get(session_id, []))


def test_storage_without_outbox_falls_back_to_memory_with_a_warning(
    tg: FakeTelegram, serve: Callable[[PocketPing], str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pocketping.bridges"):
        pp = make_pp(tg, SeedStorage())
        v = Visitor(serve(pp))
    try:
        v.say("still delivered")
        tg.wait_for(lambda: [t for t in texts(tg) if t.endswith("still delivered")])
        assert any("lost on restart" in r.getMessage() for r in caplog.records)
    finally:
        v.close()


def test_reply_from_one_bridge_is_shown_in_the_others(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    import httpx

    from pocketping import SlackBridge

    from .fakes.slack import CHANNEL, FakeSlack

    slack = FakeSlack().start()
    try:
        bridges = [
            fast(TelegramBridge(tg.token, CHAT_ID, webhook_secret=SECRET, api_base=tg.url)),
            fast(SlackBridge(slack.token, CHANNEL, signing_secret=slack.signing_secret, api_base=f"{slack.url}/api")),
        ]
        pp = PocketPing(storage=MemoryStorage(), bridges=bridges, sse_heartbeat=0.5)
        base = serve(pp)
        v = Visitor(base)
        try:
            v.say("hello both")
            tg.wait_for(lambda: [t for t in texts(tg) if t.endswith("hello both")])
            thread_ts = slack.wait_for(lambda: key(pp, f"slack:thread:{v.session_id}"))
            update = tg.operator_update(1000, "answered from Telegram")
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            assert httpx.post(f"{base}/webhooks/telegram", json=update, headers=headers, timeout=10).status_code == 200
            assert v.next_operator_message()["content"] == "answered from Telegram"
            mirrored = slack.wait_for(
                lambda: [b["text"] for b in slack.sent("chat.postMessage") if "answered from Telegram" in b["text"]]
            )
            assert mirrored == ["*🧑‍💼 Alice (via telegram):*\nanswered from Telegram"]
            assert slack.sent("chat.postMessage")[-1]["thread_ts"] == thread_ts
            assert drained(pp)
            assert not [t for t in texts(tg) if "answered from Telegram" in t]  # not echoed back
        finally:
            v.close()
    finally:
        slack.stop()


def test_a_message_stored_but_never_queued_is_relayed_after_a_restart(tg: FakeTelegram, tmp_path: Any) -> None:
    """A process killed between storing a visitor message and queueing it for the bridges: the
    next start finds the message and relays it, once, however often it restarts."""
    import asyncio
    from datetime import UTC, datetime

    from pocketping import SQLiteStorage
    from pocketping.models import Message, new_id

    db = tmp_path / "pp.db"

    async def stored_but_not_queued() -> str:
        pp = PocketPing(storage=SQLiteStorage(db), rate_limits=None)
        async with pp.lifespan():
            session = (await pp.chat.connect("visitor-who-was-unlucky")).session
            message = Message(new_id("msg"), session.id, "stored, never queued", "visitor", datetime.now(UTC))
            await pp.storage.save_message(session.id, message)  # ... and then the process died
        return session.id

    sid = asyncio.run(stored_but_not_queued())
    for _restart in range(2):
        pp = make_pp(tg, storage=SQLiteStorage(db))
        pp.sync.start()
        try:
            tg.wait_for(lambda: [t for t in texts(tg) if "stored, never queued" in t])
            assert drained(pp)
            assert key(pp, f"telegram:thread:{sid}") is not None
        finally:
            pp.sync.stop()
    assert len([t for t in texts(tg) if "stored, never queued" in t]) == 1
