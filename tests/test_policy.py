"""Client rules against a real server: verified identity, bans, client filters, trusted proxies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from pocketping import InvalidInput, IpFilter, MemoryStorage, PocketPing, SQLiteStorage, UaFilter, identity_hash
from pocketping.testing import FakeBridge

from .conftest import LiveServer, connect, mounted

SECRET = "s3cret-identity-key"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def test_identity_hash_is_the_hex_hmac_sha256_of_the_user_id() -> None:
    # RFC 4231-style check against a value computed independently (openssl dgst -sha256 -hmac).
    assert identity_hash("key", "The quick brown fox jumps over the lazy dog") == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )
    with pytest.raises(InvalidInput):
        identity_hash("", "u1")


def test_verified_unverified_and_wrong_identities(serve: Callable[[PocketPing], str]) -> None:
    fake = FakeBridge()
    pp = PocketPing(storage=MemoryStorage(), identity_secret=SECRET, bridges=[fake], console_token="tok")
    base = serve(pp)
    good = {"id": "user_1", "email": "ada@example.com", "userHash": identity_hash(SECRET, "user_1")}
    with httpx.Client(base_url=base, timeout=10) as http:
        body = connect(http, visitor_id="visitor-a", identity=good)
        sid = body["sessionId"]
        session = pp.sync.get_session(sid)
        assert session.identity == {"id": "user_1", "email": "ada@example.com"}  # the hash is not kept
        assert session.identity_verified
        # A wrong hash: 401, nothing changes.
        wrong = {"id": "user_2", "userHash": identity_hash(SECRET, "user_1")}
        r = http.post("/identify", json={"sessionId": sid, "identity": wrong})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert pp.sync.get_session(sid).identity == {"id": "user_1", "email": "ada@example.com"}
        # No hash: stored, unverified.
        assert http.post("/identify", json={"sessionId": sid, "identity": {"id": "user_3"}}).status_code == 200
        session = pp.sync.get_session(sid)
        assert session.identity == {"id": "user_3"} and not session.identity_verified
        # Operators see it: the console's session list and the thread header.
        listed = http.get("/console/api/sessions", headers={"Authorization": "Bearer tok"}).json()["sessions"]
        assert listed[0]["identityVerified"] is False
        r = http.post("/connect", json={"visitorId": "visitor-b", "sessionId": None, "identity": good})
        other = r.json()["sessionId"]
        assert pp.sync.run(fake.delivered())
        header = fake.texts(other)[0]
        # The hash proves the user id only: the e-mail beside it is shown as the visitor's word.
        assert "Identity: user id verified by your site; name and e-mail as given by the visitor" in header
        assert "Identity: verified" not in header
    # The secret never shows in what PocketPing prints of itself.
    assert SECRET not in repr(pp.chat.policy)


def test_required_verified_identity(serve: Callable[[PocketPing], str]) -> None:
    with pytest.raises(InvalidInput, match="identity_secret"):
        PocketPing(storage=MemoryStorage(), require_verified_identity=True)
    pp = PocketPing(storage=MemoryStorage(), identity_secret=SECRET, require_verified_identity=True)
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        r = http.post("/connect", json={"visitorId": "v", "sessionId": None, "identity": {"id": "u"}})
        assert r.status_code == 401
        assert pp.sync.get_sessions() == []  # nothing stored
        sid = connect(http)["sessionId"]  # an anonymous visitor is still welcome
        assert http.post("/identify", json={"sessionId": sid, "identity": {"id": "u"}}).status_code == 401
        signed = {"id": "u", "userHash": identity_hash(SECRET, "u")}
        assert http.post("/identify", json={"sessionId": sid, "identity": signed}).status_code == 200
        assert pp.sync.get_session(sid).identity_verified


def test_a_banned_visitor_can_neither_post_nor_connect_even_after_a_restart(
    serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    db = tmp_path / "ban.db"
    pp = PocketPing(storage=SQLiteStorage(db))
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http, visitor_id="troll")["sessionId"]
        assert http.post("/message", json={"sessionId": sid, "content": "hello"}).status_code == 200
        pp.sync.ban(sid)
        r = http.post("/message", json={"sessionId": sid, "content": "spam"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert http.post("/connect", json={"visitorId": "troll", "sessionId": None}).status_code == 403
        assert http.post("/connect", json={"visitorId": "other", "sessionId": sid}).status_code == 403
        assert http.post("/typing", json={"sessionId": sid, "isTyping": True}).status_code == 403
        with pytest.raises(InvalidStatus), ws_connect(base.replace("http://", "ws://") + f"/stream?sessionId={sid}"):
            pass
        assert http.get("/stream", params={"sessionId": sid}).status_code == 403
        assert http.get("/messages", params={"sessionId": sid}).status_code == 403
        assert [m.content for m in pp.sync.get_messages(sid)] == ["hello"]
    # Another PocketPing on the same database (a restart, another worker) keeps the ban.
    again = PocketPing(storage=SQLiteStorage(db))
    base2 = serve(again)
    with httpx.Client(base_url=base2, timeout=10) as http:
        assert http.post("/connect", json={"visitorId": "troll", "sessionId": None}).status_code == 403
        again.sync.unban(sid)
        assert http.post("/message", json={"sessionId": sid, "content": "sorry"}).status_code == 200


def test_ban_from_the_console_and_from_a_bridge_command(serve: Callable[[PocketPing], str]) -> None:
    fake = FakeBridge()
    pp = PocketPing(storage=MemoryStorage(), bridges=[fake], console_token="tok")
    base = serve(pp)
    auth = {"Authorization": "Bearer tok"}
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]
        r = http.post(f"/console/api/sessions/{sid}/ban", json={"banned": True}, headers=auth)
        assert r.status_code == 200 and r.json()["session"]["banned"] is True
        assert http.post("/message", json={"sessionId": sid, "content": "x"}).status_code == 403
        pp.sync.run(fake.reply(sid, "!unban"))
        assert http.post("/message", json={"sessionId": sid, "content": "x"}).status_code == 200
        pp.sync.run(fake.reply(sid, "!ban"))
        assert pp.sync.get_session(sid).banned
    assert any("!ban:" in t for t in _help(pp, fake, sid))


def _help(pp: PocketPing, fake: FakeBridge, sid: str) -> list[str]:
    pp.sync.run(fake.reply(sid, "!help"))
    assert pp.sync.run(fake.delivered())
    return fake.texts(sid)


@pytest.mark.parametrize(
    ("settings", "headers", "allowed"),
    [
        ({"ip_filter": IpFilter(deny=["127.0.0.0/8"])}, {}, False),
        ({"ip_filter": IpFilter(allow=["10.0.0.0/8"])}, {}, False),
        ({"ip_filter": IpFilter(allow=["127.0.0.1"])}, {}, True),
        ({"ua_filter": UaFilter()}, {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}, False),
        ({"ua_filter": UaFilter()}, {"User-Agent": "Mozilla/5.0 HeadlessChrome/126.0"}, False),
        ({"ua_filter": UaFilter()}, {"User-Agent": "UptimeRobot/2.0"}, False),
        ({"ua_filter": UaFilter()}, {"User-Agent": BROWSER}, True),
        ({"ua_filter": UaFilter(allow=["HeadlessChrome"])}, {"User-Agent": "HeadlessChrome/126"}, True),
        ({"ua_filter": UaFilter(block_bots=False, deny=["evil"])}, {"User-Agent": "evil-client"}, False),
    ],
)
def test_client_filters(
    settings: dict[str, Any], headers: dict[str, str], allowed: bool, serve: Callable[[PocketPing], str]
) -> None:
    fake = FakeBridge()
    pp = PocketPing(storage=MemoryStorage(), bridges=[fake], **settings)
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10, headers={"User-Agent": BROWSER, **headers}) as http:
        r = http.post("/connect", json={"visitorId": "v", "sessionId": None})
        assert r.status_code == (200 if allowed else 403), r.text
        assert http.get("/health").status_code == 200  # monitors and platforms are not filtered
        if not allowed:
            assert r.json()["error"] == "forbidden"
            assert http.get("/messages", params={"sessionId": "x"}).status_code == 403
            assert pp.sync.get_sessions() == [] and fake.posts == []


def test_forwarded_addresses_count_only_from_trusted_proxies() -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.5, 10.1.2.3"}
    plain = PocketPing(storage=MemoryStorage())
    behind = PocketPing(storage=MemoryStorage(), trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    for pp, expected in ((plain, "127.0.0.1"), (behind, "203.0.113.5")):
        # uvicorn's own proxy-header rewriting off: PocketPing sees the real peer.
        server = LiveServer(mounted(pp), proxy_headers=False).start()
        try:
            with httpx.Client(base_url=server.url + "/pocketping", timeout=10) as http:
                r = http.post("/connect", json={"visitorId": "v", "sessionId": None}, headers=forwarded)
                assert pp.sync.get_session(r.json()["sessionId"]).metadata["ip"] == expected
        finally:
            server.stop()
    with pytest.raises(InvalidInput, match="trusted_proxies"):
        PocketPing(storage=MemoryStorage(), trusted_proxies=["not-an-address"])
