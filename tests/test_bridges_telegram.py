"""TelegramBridge against a fake Bot API on 127.0.0.1, with PocketPing on a real uvicorn server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketping import MemoryStorage, PocketPing, SQLiteStorage
from pocketping.bridges import TelegramBridge
from pocketping.errors import BridgeError

from .fakes.harness import Visitor, drained, fast, key, stored
from .fakes.telegram import CHAT_ID, FakeTelegram

SECRET = "s3cret-Token_1"


def bridge(tg: FakeTelegram, **kw: Any) -> TelegramBridge:
    b = TelegramBridge(tg.token, CHAT_ID, webhook_secret=kw.pop("webhook_secret", SECRET), api_base=tg.url, **kw)
    fast(b)
    return b


def make_pp(tg: FakeTelegram, storage: Any = None, **kw: Any) -> PocketPing:
    return PocketPing(storage=storage or MemoryStorage(), bridges=[bridge(tg, **kw)], sse_heartbeat=0.5)


def hook(base: str, update: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
    headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
    return httpx.post(f"{base}/webhooks/telegram", json=update, headers=headers, timeout=10)


def texts(tg: FakeTelegram, thread: int | None = None) -> list[str]:
    return [b["text"] for b in tg.sent("sendMessage") if thread is None or b.get("message_thread_id") == thread]


def test_round_trip_topic_header_reply_edit_delete_commands(
    tg: FakeTelegram, serve: Callable[[PocketPing], str]
) -> None:
    pp = make_pp(tg)
    base = serve(pp)
    v = Visitor(base, identity={"id": "u1", "name": "Ada <Admin>", "email": "ada@example.com"})
    try:
        topic = tg.wait_for(lambda: tg.sent("createForumTopic"))[0]
        assert topic["chat_id"] == CHAT_ID and topic["name"] == "💬 Ada <Admin>"
        thread = 1000
        header = tg.wait_for(lambda: texts(tg, thread))[0]
        assert "🆕 New conversation" in header and "Ada &lt;Admin&gt;" in header and "ada@example.com" in header
        assert "https://shop.example/pricing?plan=pro" in header and "https://www.google.com/" in header
        assert "fr-FR" in header
        assert key(pp, f"telegram:thread:{v.session_id}") == "1000"

        v.say("Hello, is the <b>pro</b> plan & annual billing available?")
        posted = tg.wait_for(lambda: [t for t in texts(tg, thread) if "annual" in t])[0]
        assert (
            posted
            == "<b>Ada &lt;Admin&gt;:</b>\nHello, is the &lt;b&gt;pro&lt;/b&gt; plan &amp; annual billing available?"
        )
        assert all(b["parse_mode"] == "HTML" for b in tg.sent("sendMessage"))

        # Operator replies in the topic: stored as "operator", pushed to the visitor's stream.
        reply = tg.operator_update(thread, "Yes, it is!")
        assert hook(base, reply).json() == {"ok": True}
        pushed = v.next_operator_message()
        assert pushed["content"] == "Yes, it is!"
        ops = stored(pp, v.session_id, "operator")
        assert [m.content for m in ops] == ["Yes, it is!"] and ops[0].metadata["operatorName"] == "Alice"
        assert pp.operator_online  # any reply shows operators online

        # Redelivered update: stored once.
        assert hook(base, reply).status_code == 200
        assert len(stored(pp, v.session_id, "operator")) == 1

        # Edit and delete are mirrored to the widget.
        op_id = reply["message"]["message_id"]
        assert hook(base, tg.operator_update(thread, "Yes, it is (annual too)!", edited_id=op_id)).status_code == 200
        edited = v.stream.next(type="message_edited")["json"]["data"]
        assert edited["content"] == "Yes, it is (annual too)!" and edited["messageId"] == ops[0].id
        assert hook(base, tg.operator_update(thread, "/delete", reply_to=op_id)).status_code == 200
        assert v.stream.next(type="message_deleted")["json"]["data"]["messageId"] == ops[0].id
        assert stored(pp, v.session_id, "operator")[0].deleted_at is not None

        # Internal note and other bots: never reach the visitor.
        hook(base, tg.operator_update(thread, "// VIP customer, be nice"))
        hook(base, tg.operator_update(thread, "I am a bot", is_bot=True))
        assert len(stored(pp, v.session_id, "operator")) == 1

        # /info posts who the visitor is; /close closes the session, shown in the topic.
        hook(base, tg.operator_update(thread, "/info@pocketping_bot"))
        tg.wait_for(lambda: [t for t in texts(tg, thread) if t.startswith("<b>ℹ️ Conversation</b>")])
        hook(base, tg.operator_update(thread, "/close"))
        closed = v.stream.next(type="event")["json"]["data"]
        assert closed["name"] == "session_closed"
        tg.wait_for(lambda: "<b>🔴 Conversation closed</b>" in texts(tg, thread))
        tg.wait_for(lambda: tg.sent("closeForumTopic"))
        assert pp.sync.get_session(v.session_id).status == "closed"
        assert len(stored(pp, v.session_id, "operator")) == 1

        # The visitor comes back: the topic is reopened and the message lands in it.
        v.say("One more thing")
        tg.wait_for(lambda: tg.sent("reopenForumTopic"))
        tg.wait_for(lambda: [t for t in texts(tg, thread) if "One more thing" in t])
        assert len(tg.sent("createForumTopic")) == 1

        # Messages sent from code show in the topic too, marked as such.
        pp.sync.send_message(v.session_id, "Sent from the console", type="operator")
        tg.wait_for(lambda: [t for t in texts(tg, thread) if "Sent from the console" in t and "via PocketPing" in t])
        assert not [t for t in texts(tg, thread) if t.endswith("\nYes, it is!")]  # no echo of the topic's own reply
    finally:
        v.close()


def test_webhook_signature_rejected_and_nothing_stored(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(tg)
    base = serve(pp)
    v = Visitor(base)
    try:
        tg.wait_for(lambda: texts(tg, 1000))
        update = tg.operator_update(1000, "forged")
        assert hook(base, update, secret=None).status_code == 401
        assert hook(base, update, secret="wrong").status_code == 401
        assert stored(pp, v.session_id, "operator") == []
        # The real update with the same id is then accepted (a rejected one is not "seen").
        assert hook(base, update).status_code == 200
        assert [m.content for m in stored(pp, v.session_id, "operator")] == ["forged"]
    finally:
        v.close()


def test_webhook_disabled_without_secret(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(tg, webhook_secret=None)
    pp.bridges[0].poll_timeout = 0.5  # type: ignore[attr-defined]  (polling mode; keep shutdown quick)
    base = serve(pp)
    assert hook(base, tg.operator_update(1000, "x"), secret="anything").status_code == 403


def test_long_polling_delivers_operator_replies(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    b = bridge(tg, webhook_secret=None)
    b.poll_timeout = 1
    pp = PocketPing(storage=MemoryStorage(), bridges=[b], sse_heartbeat=0.5)
    base = serve(pp)
    v = Visitor(base)
    try:
        tg.wait_for(lambda: tg.sent("deleteWebhook"))
        tg.wait_for(lambda: texts(tg, 1000))
        with tg.lock:
            tg.updates.append(tg.operator_update(1000, "Hi from polling"))
        assert v.next_operator_message()["content"] == "Hi from polling"
        # The next getUpdates confirms it (offset = update_id + 1) and it is not stored twice.
        tg.wait_for(lambda: any(c.get("offset") for c in tg.sent("getUpdates")))
        time.sleep(0.2)
        assert len(stored(pp, v.session_id, "operator")) == 1
    finally:
        v.close()


def test_retry_after_429_and_500(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(tg)
    base = serve(pp)
    v = Visitor(base)
    try:
        tg.wait_for(lambda: texts(tg, 1000))
        tg.fail(1, 429, method="sendMessage", retry_after=1)
        tg.fail(2, 500, method="sendMessage")
        started = time.monotonic()
        r_time = time.monotonic()
        v.say("first")
        v.say("second")
        assert time.monotonic() - r_time < 2  # the visitor's POSTs never wait for the platform
        tg.wait_for(lambda: "second" in "".join(texts(tg, 1000)))
        elapsed = time.monotonic() - started
        assert elapsed >= 1.0  # Retry-After honoured
        assert elapsed < 5.0
        ok = [t for t in texts(tg, 1000) if t.endswith(("first", "second"))]
        assert [t.rsplit("\n", 1)[1] for t in ok] == ["first", "second"]  # in order, once each
        assert len([c for c in tg.calls if c.method == "sendMessage" and c.status != 200]) == 3
        assert drained(pp)
    finally:
        v.close()


def test_restart_in_the_middle_of_a_retry_delivers_exactly_once(tg: FakeTelegram, tmp_path: Path) -> None:
    from .conftest import LiveServer, mounted

    db = tmp_path / "pp.db"
    pp1 = make_pp(tg, storage=SQLiteStorage(db))
    server = LiveServer(mounted(pp1)).start()
    base = server.url + "/pocketping"
    v = Visitor(base)
    try:
        tg.wait_for(lambda: texts(tg, 1000))
        with tg.lock:
            tg.down_for.add("sendMessage")
        v.say("survives a restart")
        tg.wait_for(lambda: len(tg.sent("sendMessage", ok_only=False)) >= 3)  # header + failing attempts
    finally:
        v.close()
        server.stop()
    with tg.lock:
        tg.down_for.clear()
    assert not [t for t in texts(tg) if "survives" in t]
    pp2 = make_pp(tg, storage=SQLiteStorage(db))
    server2 = LiveServer(mounted(pp2)).start()
    try:
        tg.wait_for(lambda: [t for t in texts(tg) if "survives" in t])
        assert drained(pp2)
        time.sleep(0.3)
        assert len([t for t in texts(tg) if "survives" in t]) == 1
        assert len(tg.sent("createForumTopic")) == 1  # the mapping survived
    finally:
        server2.stop()


def test_hostile_visitor_text_is_escaped(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(tg)
    base = serve(pp)
    v = Visitor(base)
    try:
        v.say('<a href="tg://user?id=1">click</a> </b><i>&amp; @everyone')
        posted = tg.wait_for(lambda: [t for t in texts(tg, 1000) if "click" in t])[0]
        body = posted.split("\n", 1)[1]
        assert body == '&lt;a href="tg://user?id=1"&gt;click&lt;/a&gt; &lt;/b&gt;&lt;i&gt;&amp;amp; @everyone'
        assert "<a" not in posted and "<i>" not in posted
    finally:
        v.close()


def test_from_env_and_validation() -> None:
    env = {
        "POCKETPING_TELEGRAM_BOT_TOKEN": "1:x",
        "POCKETPING_TELEGRAM_CHAT_ID": "-100",
        "POCKETPING_TELEGRAM_WEBHOOK_SECRET": "s",
    }
    b = TelegramBridge.from_env(env)
    assert (b.bot_token, b.chat_id, b.webhook_secret, b.api_base) == ("1:x", "-100", "s", "https://api.telegram.org")
    with pytest.raises(BridgeError, match="POCKETPING_TELEGRAM_CHAT_ID") as info:
        TelegramBridge.from_env({"POCKETPING_TELEGRAM_BOT_TOKEN": "1:x"})
    assert info.value.bridge == "telegram"
    with pytest.raises(ValueError, match="one bridge per platform"):
        PocketPing(storage=MemoryStorage(), bridges=[b, TelegramBridge.from_env(env)])


def test_visitor_edit_and_delete_are_mirrored(tg: FakeTelegram, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(tg)
    base = serve(pp)
    v = Visitor(base)
    try:
        mid = v.say("typo heer")
        tg.wait_for(lambda: [t for t in texts(tg, 1000) if "typo heer" in t])
        pid = int(tg.wait_for(lambda: key(pp, f"telegram:out:{mid}")).split()[1])
        assert (
            v.http.patch(f"/message/{mid}", json={"sessionId": v.session_id, "content": "typo <here>"}).status_code
            == 200
        )
        edit = tg.wait_for(lambda: tg.sent("editMessageText"))[0]
        assert edit["message_id"] == pid and edit["text"].endswith("typo &lt;here&gt;\n(edited)")
        assert v.http.delete(f"/message/{mid}", params={"sessionId": v.session_id}).status_code == 200
        assert tg.wait_for(lambda: tg.sent("deleteMessage"))[0]["message_id"] == pid
        assert drained(pp)
    finally:
        v.close()
