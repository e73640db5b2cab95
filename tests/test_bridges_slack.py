"""SlackBridge against a fake Slack Web API on 127.0.0.1, with PocketPing on a real uvicorn server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pocketping import MemoryStorage, PocketPing, SQLiteStorage
from pocketping.bridges import SlackBridge

from .fakes.harness import Visitor, drained, fast, key, stored
from .fakes.slack import BOT_ID, CHANNEL, FakeSlack


def make_pp(slack: FakeSlack, storage: Any = None) -> PocketPing:
    b = SlackBridge(slack.token, CHANNEL, signing_secret=slack.signing_secret, api_base=f"{slack.url}/api")
    return PocketPing(storage=storage or MemoryStorage(), bridges=[fast(b)], sse_heartbeat=0.5)


def hook(base: str, slack: FakeSlack, payload: dict[str, Any], **kw: Any) -> httpx.Response:
    body, headers = slack.signed(payload, **kw)
    return httpx.post(f"{base}/webhooks/slack", content=body, headers=headers, timeout=10)


def posts(slack: FakeSlack, thread: str | None = None) -> list[str]:
    return [b["text"] for b in slack.sent("chat.postMessage") if thread is None or b.get("thread_ts") == thread]


def test_round_trip_thread_header_reply_edit_delete_commands(
    slack: FakeSlack, serve: Callable[[PocketPing], str]
) -> None:
    pp = make_pp(slack)
    base = serve(pp)
    v = Visitor(base, identity={"id": "u1", "name": "Ada", "email": "ada@example.com"})
    try:
        root = slack.wait_for(lambda: slack.sent("chat.postMessage"))[0]
        assert "thread_ts" not in root and "*🆕 New conversation*" in root["text"]
        for fact in (
            "Ada",
            "ada@example.com",
            "https://shop.example/pricing?plan=pro",
            "https://www.google.com/",
            "fr-FR",
        ):
            assert fact in root["text"]
        thread = slack.wait_for(lambda: key(pp, f"slack:thread:{v.session_id}"))
        assert thread == "1700000001.000100"  # the root's ts is the thread key

        v.say("Is the <pro> plan & annual billing available?")
        posted = slack.wait_for(lambda: posts(slack, thread))[0]
        assert posted == "*Ada:*\nIs the &lt;pro&gt; plan &amp; annual billing available?"

        reply = slack.reply(thread, "Yes &amp; it is &lt;3")
        r = hook(base, slack, reply)
        assert r.status_code == 200
        assert v.next_operator_message()["content"] == "Yes & it is <3"
        ops = stored(pp, v.session_id, "operator")
        assert [m.metadata["operatorName"] for m in ops] == ["Bob Operator"]

        # Slack retries an event (same event_id): stored once.
        assert hook(base, slack, reply).status_code == 200
        assert len(stored(pp, v.session_id, "operator")) == 1

        op_ts = reply["event"]["ts"]
        edit = slack.event(
            {
                "type": "message",
                "subtype": "message_changed",
                "hidden": True,
                "message": {
                    "type": "message",
                    "user": "U0ALICE",
                    "text": "Yes, annual too",
                    "ts": op_ts,
                    "thread_ts": thread,
                },
                "previous_message": {"ts": op_ts, "text": "Yes &amp; it is &lt;3"},
            }
        )
        assert hook(base, slack, edit).status_code == 200
        assert v.stream.next(type="message_edited")["json"]["data"]["content"] == "Yes, annual too"
        delete = slack.event(
            {
                "type": "message",
                "subtype": "message_deleted",
                "hidden": True,
                "deleted_ts": op_ts,
                "previous_message": {"ts": op_ts, "thread_ts": thread, "user": "U0ALICE"},
            }
        )
        assert hook(base, slack, delete).status_code == 200
        assert v.stream.next(type="message_deleted")["json"]["data"]["messageId"] == ops[0].id

        # Our own bot's echoes, top-level channel chatter and internal notes are ignored.
        hook(base, slack, slack.reply(thread, "echo of our post", bot_id=BOT_ID))
        hook(
            base,
            slack,
            slack.event({"type": "message", "user": "U0ALICE", "text": "lunch?", "ts": "1700009999.000100"}),
        )
        hook(base, slack, slack.reply(thread, "// refund approved internally"))
        assert len(stored(pp, v.session_id, "operator")) == 1

        hook(base, slack, slack.reply(thread, "!info"))
        slack.wait_for(lambda: [t for t in posts(slack, thread) if t.startswith("*ℹ️ Conversation*")])
        hook(base, slack, slack.reply(thread, "!close"))
        assert v.stream.next(type="event")["json"]["data"]["name"] == "session_closed"
        slack.wait_for(lambda: "*🔴 Conversation closed*" in posts(slack, thread))
        assert pp.sync.get_session(v.session_id).status == "closed"
        assert len(stored(pp, v.session_id, "operator")) == 1
        assert all(b["parse"] == "none" and b["link_names"] is False for b in slack.sent("chat.postMessage"))
    finally:
        v.close()


def test_url_verification_and_signature_rejection(slack: FakeSlack, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(slack)
    base = serve(pp)
    v = Visitor(base)
    try:
        challenge = {
            "token": "x",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
        r = hook(base, slack, challenge)
        assert r.status_code == 200 and r.json() == {"challenge": challenge["challenge"]}
        thread = slack.wait_for(lambda: key(pp, f"slack:thread:{v.session_id}"))
        reply = slack.reply(thread, "forged")
        assert hook(base, slack, reply, secret="not-the-secret").status_code == 401
        assert hook(base, slack, reply, at=time.time() - 301).status_code == 401  # replayed after the window
        assert httpx.post(f"{base}/webhooks/slack", json=reply, timeout=10).status_code == 401  # unsigned
        assert hook(base, slack, challenge, secret="nope").status_code == 401
        assert stored(pp, v.session_id, "operator") == []
        assert hook(base, slack, reply, at=time.time() - 200).status_code == 200  # inside the window
        assert [m.content for m in stored(pp, v.session_id, "operator")] == ["forged"]
    finally:
        v.close()


def test_retry_after_429_and_500(slack: FakeSlack, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(slack)
    base = serve(pp)
    v = Visitor(base)
    try:
        thread = slack.wait_for(lambda: key(pp, f"slack:thread:{v.session_id}"))
        slack.fail(1, 429, method="chat.postMessage", retry_after=1)
        slack.fail(2, 500, method="chat.postMessage")
        started = time.monotonic()
        v.say("first")
        v.say("second")
        slack.wait_for(lambda: [t for t in posts(slack, thread) if t.endswith("second")])
        assert 1.0 <= time.monotonic() - started < 5.0
        assert [t.rsplit("\n", 1)[1] for t in posts(slack, thread)] == ["first", "second"]
        assert drained(pp)
    finally:
        v.close()


def test_restart_in_the_middle_of_a_retry_delivers_exactly_once(slack: FakeSlack, tmp_path: Path) -> None:
    from .conftest import LiveServer, mounted

    db = tmp_path / "pp.db"
    pp1 = make_pp(slack, SQLiteStorage(db))
    server = LiveServer(mounted(pp1)).start()
    v = Visitor(server.url + "/pocketping")
    try:
        thread = slack.wait_for(lambda: key(pp1, f"slack:thread:{v.session_id}"))
        with slack.lock:
            slack.down_for.add("chat.postMessage")
        v.say("survives a restart")
        slack.wait_for(lambda: len(slack.sent("chat.postMessage", ok_only=False)) >= 3)
    finally:
        v.close()
        server.stop()
    with slack.lock:
        slack.down_for.clear()
    pp2 = make_pp(slack, SQLiteStorage(db))
    server2 = LiveServer(mounted(pp2)).start()
    try:
        slack.wait_for(lambda: [t for t in posts(slack, thread) if "survives" in t])
        assert drained(pp2)
        time.sleep(0.3)
        assert len([t for t in posts(slack) if "survives" in t]) == 1
        assert len(posts(slack)) == 2  # one root (mapping survived) + the message
    finally:
        server2.stop()


def test_hostile_visitor_text_is_escaped(slack: FakeSlack, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(slack)
    base = serve(pp)
    v = Visitor(base)
    try:
        v.say("<!channel> <@U0ALICE> <https://evil.example|your bank> & <!here>")
        posted = slack.wait_for(lambda: [t for t in posts(slack) if "evil" in t])[0]
        body = posted.split("\n", 1)[1]
        assert body == "&lt;!channel&gt; &lt;@U0ALICE&gt; &lt;https://evil.example|your bank&gt; &amp; &lt;!here&gt;"
        assert "<" not in posted and ">" not in posted
    finally:
        v.close()


def test_from_env() -> None:
    b = SlackBridge.from_env(
        {
            "POCKETPING_SLACK_BOT_TOKEN": "xoxb-1",
            "POCKETPING_SLACK_CHANNEL_ID": "C1",
            "POCKETPING_SLACK_SIGNING_SECRET": "s",
        }
    )
    assert (b.bot_token, b.channel_id, b.signing_secret, b.api_base) == ("xoxb-1", "C1", "s", "https://slack.com/api")


def test_visitor_edit_and_delete_are_mirrored(slack: FakeSlack, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(slack)
    base = serve(pp)
    v = Visitor(base)
    try:
        mid = v.say("typo heer")
        ts = slack.wait_for(lambda: key(pp, f"slack:out:{mid}")).split()[1]
        assert (
            v.http.patch(f"/message/{mid}", json={"sessionId": v.session_id, "content": "typo <!here>"}).status_code
            == 200
        )
        edit = slack.wait_for(lambda: slack.sent("chat.update"))[0]
        assert edit["ts"] == ts and edit["channel"] == CHANNEL and edit["text"].endswith("typo &lt;!here&gt;\n(edited)")
        assert v.http.delete(f"/message/{mid}", params={"sessionId": v.session_id}).status_code == 200
        assert slack.wait_for(lambda: slack.sent("chat.delete"))[0]["ts"] == ts
        assert drained(pp)
    finally:
        v.close()
