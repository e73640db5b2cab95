"""DiscordBridge against a fake Discord REST API and Gateway on 127.0.0.1, with PocketPing on a
real uvicorn server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pocketping import MemoryStorage, PocketPing, SQLiteStorage
from pocketping.bridges import DiscordBridge

from .fakes.discord import CHANNEL, FakeDiscord
from .fakes.harness import Visitor, drained, fast, key, stored

SIGNING_KEY = Ed25519PrivateKey.generate()
PUBLIC_KEY = SIGNING_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def make_pp(dc: FakeDiscord, storage: Any = None, *, gateway_url: str | None = None) -> PocketPing:
    b = DiscordBridge(dc.token, CHANNEL, public_key=PUBLIC_KEY, api_base=f"{dc.url}/api/v10", gateway_url=gateway_url)
    return PocketPing(storage=storage or MemoryStorage(), bridges=[fast(b)], sse_heartbeat=0.5)


def interaction(
    base: str, body: dict[str, Any], key: Ed25519PrivateKey = SIGNING_KEY, ts: str | None = None
) -> httpx.Response:
    raw = json.dumps(body).encode()
    ts = ts or str(int(time.time()))
    sig = key.sign(ts.encode() + raw).hex()
    headers = {"X-Signature-Ed25519": sig, "X-Signature-Timestamp": ts, "Content-Type": "application/json"}
    return httpx.post(f"{base}/webhooks/discord", content=raw, headers=headers, timeout=10)


def slash(thread: str, name: str, iid: str, **options: str) -> dict[str, Any]:
    return {
        "id": iid,
        "application_id": "app",
        "type": 2,
        "token": "tok",
        "version": 1,
        "channel_id": thread,
        "guild_id": "g",
        "member": {"user": {"id": "1400000000000000007", "username": "alice"}},
        "data": {
            "id": "cmd",
            "name": name,
            "type": 1,
            "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
        },
    }


def test_round_trip_thread_gateway_reply_edit_delete_commands(
    dc: FakeDiscord, serve: Callable[[PocketPing], str]
) -> None:
    pp = make_pp(dc)  # the Gateway URL comes from GET /gateway/bot
    base = serve(pp)
    v = Visitor(base, identity={"id": "u1", "name": "Ada", "email": "ada@example.com"})
    try:
        created = dc.wait_for(lambda: dc.sent("create_thread"))[0]
        assert created["type"] == 11 and created["name"] == "💬 Ada"
        thread = dc.wait_for(lambda: key(pp, f"discord:thread:{v.session_id}"))
        header = dc.wait_for(lambda: dc.posted(thread))[0]
        assert header.startswith("**🆕 New conversation**") and "ada@example.com" in header and "fr-FR" in header
        assert "shop.example/pricing?plan=pro" in header
        assert all(b["allowed_mentions"] == {"parse": []} and b["enforce_nonce"] for b in dc.sent("create_message"))

        v.say("Hello **there**, is the pro plan available?")
        posted = dc.wait_for(lambda: [t for t in dc.posted(thread) if "pro plan" in t])[0]
        assert posted == "**Ada:**\nHello \\*\\*there\\*\\*, is the pro plan available?"

        dc.gateway.wait_clients()
        identify = dc.gateway.received(2)[0]["d"]
        assert identify["token"] == dc.token and identify["intents"] & (1 << 15)
        reply = dc.operator_message(thread, "Yes, it is!")
        dc.gateway.dispatch("MESSAGE_CREATE", reply)
        assert v.next_operator_message()["content"] == "Yes, it is!"
        ops = stored(pp, v.session_id, "operator")
        assert [m.metadata["operatorName"] for m in ops] == ["Alice (support)"]

        # The Gateway asks for a reconnect: the client resumes (op 6) and misses nothing.
        dc.gateway.reconnect()
        dc.wait_for(lambda: dc.gateway.received(6), timeout=10)
        dc.gateway.wait_clients()
        dc.gateway.dispatch("MESSAGE_UPDATE", {**reply, "content": "Yes, it is (annual too)!"})
        assert v.stream.next(type="message_edited")["json"]["data"]["content"] == "Yes, it is (annual too)!"
        dc.gateway.dispatch("MESSAGE_DELETE", {"id": reply["id"], "channel_id": thread, "guild_id": "g"})
        assert v.stream.next(type="message_deleted")["json"]["data"]["messageId"] == ops[0].id

        # The same message again (a replay), our own posts, other bots and notes: nothing new.
        dc.gateway.dispatch("MESSAGE_CREATE", reply)
        dc.gateway.dispatch("MESSAGE_CREATE", dc.operator_message(thread, "bot chatter", bot=True))
        dc.gateway.dispatch("MESSAGE_CREATE", dc.operator_message(thread, "// call them back tomorrow"))
        dc.gateway.dispatch(
            "MESSAGE_CREATE",
            {**dc.operator_message(thread, "x"), "author": {"id": "1200000000000000042", "username": "PocketPing"}},
        )
        dc.gateway.dispatch("MESSAGE_CREATE", dc.operator_message(thread, "!info"))
        dc.wait_for(lambda: [t for t in dc.posted(thread) if t.startswith("**ℹ️ Conversation**")])
        assert len(stored(pp, v.session_id, "operator")) == 1

        # Slash commands through the signed interactions endpoint.
        r = interaction(base, slash(thread, "reply", "9001", message="Sent with /reply"))
        assert r.status_code == 200 and r.json()["type"] == 4 and r.json()["data"]["flags"] == 64
        assert v.next_operator_message()["content"] == "Sent with /reply"
        assert interaction(base, slash(thread, "reply", "9001", message="Sent with /reply")).status_code == 200
        assert len(stored(pp, v.session_id, "operator")) == 2  # the redelivered interaction is stored once
        assert interaction(base, slash(thread, "close", "9002")).status_code == 200
        assert v.stream.next(type="event")["json"]["data"]["name"] == "session_closed"
        dc.wait_for(lambda: "**🔴 Conversation closed**" in dc.posted(thread))
        dc.wait_for(lambda: dc.threads[thread]["thread_metadata"]["archived"])
        assert pp.sync.get_session(v.session_id).status == "closed"
    finally:
        v.close()


def test_interaction_ping_and_signature_rejection(dc: FakeDiscord, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(dc, gateway_url=dc.gateway.url)
    base = serve(pp)
    v = Visitor(base)
    try:
        r = interaction(base, {"id": "1", "type": 1, "application_id": "app", "token": "t", "version": 1})
        assert r.status_code == 200 and r.json() == {"type": 1}
        thread = dc.wait_for(lambda: key(pp, f"discord:thread:{v.session_id}"))
        forged = slash(thread, "reply", "77", message="forged")
        assert interaction(base, forged, key=Ed25519PrivateKey.generate()).status_code == 401
        assert httpx.post(f"{base}/webhooks/discord", json=forged, timeout=10).status_code == 401
        raw = json.dumps(forged).encode()
        ts = str(int(time.time()))
        sig = SIGNING_KEY.sign(ts.encode() + raw).hex()
        tampered = raw.replace(b"forged", b"FORGED")
        r = httpx.post(
            f"{base}/webhooks/discord",
            content=tampered,
            headers={"X-Signature-Ed25519": sig, "X-Signature-Timestamp": ts},
            timeout=10,
        )
        assert r.status_code == 401
        assert stored(pp, v.session_id, "operator") == []
        assert interaction(base, forged).status_code == 200
        assert [m.content for m in stored(pp, v.session_id, "operator")] == ["forged"]
    finally:
        v.close()


def test_retry_after_429_and_500(dc: FakeDiscord, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(dc, gateway_url=dc.gateway.url)
    base = serve(pp)
    v = Visitor(base)
    try:
        thread = dc.wait_for(lambda: key(pp, f"discord:thread:{v.session_id}"))
        dc.wait_for(lambda: dc.posted(thread))
        dc.fail(1, 429, method="create_message", retry_after=1.0)
        dc.fail(2, 500, method="create_message")
        started = time.monotonic()
        v.say("first")
        v.say("second")
        dc.wait_for(lambda: [t for t in dc.posted(thread) if t.endswith("second")])
        assert 1.0 <= time.monotonic() - started < 5.0
        assert [t.rsplit("\n", 1)[1] for t in dc.posted(thread)[1:]] == ["first", "second"]
        assert drained(pp)
    finally:
        v.close()


def test_restart_in_the_middle_of_a_retry_delivers_exactly_once(dc: FakeDiscord, tmp_path: Path) -> None:
    from .conftest import LiveServer, mounted

    db = tmp_path / "pp.db"
    pp1 = make_pp(dc, SQLiteStorage(db), gateway_url=dc.gateway.url)
    server = LiveServer(mounted(pp1)).start()
    v = Visitor(server.url + "/pocketping")
    try:
        thread = dc.wait_for(lambda: key(pp1, f"discord:thread:{v.session_id}"))
        dc.wait_for(lambda: dc.posted(thread))
        with dc.lock:
            dc.down_for.add("create_message")
        v.say("survives a restart")
        dc.wait_for(lambda: len(dc.sent("create_message", ok_only=False)) >= 3)
    finally:
        v.close()
        server.stop()
    with dc.lock:
        dc.down_for.clear()
    pp2 = make_pp(dc, SQLiteStorage(db), gateway_url=dc.gateway.url)
    server2 = LiveServer(mounted(pp2)).start()
    try:
        dc.wait_for(lambda: [t for t in dc.posted(thread) if "survives" in t])
        assert drained(pp2)
        time.sleep(0.3)
        assert len([t for t in dc.posted() if "survives" in t]) == 1
        assert len(dc.threads) == 1
    finally:
        server2.stop()


def test_hostile_visitor_text_is_neutralised(dc: FakeDiscord, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(dc, gateway_url=dc.gateway.url)
    base = serve(pp)
    v = Visitor(base)
    try:
        v.say("@everyone @here <@1400000000000000007> <@&55> [your bank](https://evil.example) # Title")
        posted = dc.wait_for(lambda: [t for t in dc.posted() if "evil" in t])[0]
        body = posted.split("\n", 1)[1]
        assert "@everyone" not in body and "@here" not in body and "@\u200beveryone" in body
        assert "\\<@1400000000000000007\\>" in body and "\\<@&55\\>" in body
        assert "\\[your bank\\](https://evil.example)" in body and "\\# Title" in body
        last = dc.sent("create_message")[-1]
        assert last["allowed_mentions"] == {"parse": []}
    finally:
        v.close()


def test_from_env() -> None:
    b = DiscordBridge.from_env(
        {
            "POCKETPING_DISCORD_BOT_TOKEN": "t",
            "POCKETPING_DISCORD_CHANNEL_ID": "1",
            "POCKETPING_DISCORD_PUBLIC_KEY": PUBLIC_KEY,
        }
    )
    assert (b.bot_token, b.channel_id, b.public_key, b.api_base) == (
        "t",
        "1",
        PUBLIC_KEY,
        "https://discord.com/api/v10",
    )


def test_visitor_edit_and_delete_are_mirrored(dc: FakeDiscord, serve: Callable[[PocketPing], str]) -> None:
    pp = make_pp(dc, gateway_url=dc.gateway.url)
    base = serve(pp)
    v = Visitor(base)
    try:
        mid = v.say("typo heer")
        thread, pid = dc.wait_for(lambda: key(pp, f"discord:out:{mid}")).split()
        assert (
            v.http.patch(f"/message/{mid}", json={"sessionId": v.session_id, "content": "typo @everyone"}).status_code
            == 200
        )
        dc.wait_for(lambda: dc.messages[pid]["content"].endswith("typo @\u200beveryone\n(edited)"))
        assert dc.sent("edit_message")[0]["allowed_mentions"] == {"parse": []}
        assert v.http.delete(f"/message/{mid}", params={"sessionId": v.session_id}).status_code == 200
        dc.wait_for(lambda: pid not in dc.messages)
        assert drained(pp)
    finally:
        v.close()
