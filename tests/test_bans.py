"""Bans: a banned session can do nothing more (messages, receipts, uploads, downloads, resume);
bans by client address and by verified user id cover new sessions too, hold across processes
and restarts, and can be lifted. Real servers on 127.0.0.1; addresses arrive through 127.0.0.1
as a trusted proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus

from pocketping import (
    InvalidInput,
    LocalFileStore,
    MemoryStorage,
    PocketPing,
    SQLiteStorage,
    StorageCapabilityError,
    identity_hash,
)

from .test_bridges_delivery import SeedStorage
from .test_retention import PNG

HEADERS = {"X-PocketPing-Version": "2.6.0"}
SECRET = "identity-secret-for-bans"


@pytest.fixture
def serve(serve_unproxied: Callable[[PocketPing], str]) -> Callable[[PocketPing], str]:
    return serve_unproxied


def client(base: str, ip: str) -> httpx.Client:
    """A visitor at ``ip`` (behind the trusted proxy 127.0.0.1)."""
    return httpx.Client(base_url=base, timeout=10, headers={**HEADERS, "X-Forwarded-For": ip})


def connect(http: httpx.Client, visitor: str, **extra: Any) -> httpx.Response:
    return http.post("/connect", json={"visitorId": visitor, "sessionId": None, **extra})


def start_upload(http: httpx.Client, sid: str) -> dict[str, Any]:
    r = http.post("/upload", json={"sessionId": sid, "filename": "a.png", "mimeType": "image/png", "size": len(PNG)})
    assert r.status_code == 200, r.text
    return dict(r.json())


def make(tmp: Path, **kw: Any) -> PocketPing:
    kw.setdefault("storage", SQLiteStorage(tmp / "pp.db"))
    return PocketPing(files=LocalFileStore(tmp / "up"), trusted_proxies=["127.0.0.1"], rate_limits=None, **kw)


def test_a_banned_session_can_do_nothing_more(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    pp = make(tmp_path)
    base = serve(pp)
    with client(base, "198.51.100.1") as http:
        sid = connect(http, "v-1").json()["sessionId"]
        shown = start_upload(http, sid)
        assert httpx.put(shown["uploadUrl"], content=PNG).status_code == 200
        assert http.post("/upload/complete", json={"sessionId": sid, "attachmentId": shown["attachmentId"]}).is_success
        halfway = start_upload(http, sid)  # started before the ban
        assert httpx.put(halfway["uploadUrl"], content=PNG).status_code == 200
        unsent = start_upload(http, sid)
        reply = pp.sync.send_message(sid, content="Hello!")
        pp.sync.ban(sid)

        refused = {
            "message": http.post("/message", json={"sessionId": sid, "content": "hi"}),
            "read": http.post("/read", json={"sessionId": sid, "messageIds": [reply.id], "status": "read"}),
            "upload": http.post(
                "/upload", json={"sessionId": sid, "filename": "b.png", "mimeType": "image/png", "size": 3}
            ),
            "put": httpx.put(unsent["uploadUrl"], content=PNG),
            "complete": http.post("/upload/complete", json={"sessionId": sid, "attachmentId": halfway["attachmentId"]}),
            "download": http.get(f"/attachments/{shown['attachmentId']}"),
            "resume": http.post("/connect", json={"visitorId": "v-1", "sessionId": sid}),
        }
        assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 403)
        assert all(r.json()["error"] == "forbidden" for r in refused.values())
        assert pp.sync.get_messages(sid)[-1].status != "read"
        # A new visitor id from the same address is a new visitor: a session ban does not cover it.
        assert connect(http, "v-2").status_code == 200
        pp.sync.unban(sid)
        assert http.post("/message", json={"sessionId": sid, "content": "sorry"}).status_code == 200


def test_banning_a_sessions_address_covers_new_visitors_from_it(
    serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    pp = make(tmp_path)
    base = serve(pp)
    with client(base, "198.51.100.7") as abuser, client(base, "203.0.113.5") as other:
        sid = connect(abuser, "v-a").json()["sessionId"]
        pp.sync.ban(sid, address=True, reason="spam")
        r = connect(abuser, "v-new")
        assert r.status_code == 403 and "blocked" in r.json()["detail"]
        assert abuser.get("/stream", params={"sessionId": sid}).status_code == 403
        assert connect(other, "v-o").status_code == 200
        [ban] = pp.sync.list_bans()
        assert (ban.kind, ban.value, ban.reason) == ("address", "198.51.100.7/32", "spam")
        pp.sync.unban(sid, address=True)
        assert pp.sync.list_bans() == []
        assert connect(abuser, "v-new").status_code == 200


def test_an_ipv6_address_ban_covers_its_64_and_ranges_can_be_banned(
    serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    pp = make(tmp_path)
    base = serve(pp)
    with client(base, "2001:db8:1:2::10") as first:
        sid = connect(first, "v-6").json()["sessionId"]
    pp.sync.ban(sid, address=True)
    for ip, expected in [("2001:db8:1:2:ffff::1", 403), ("2001:DB8:1:2::10%eth0", 403), ("2001:db8:1:3::1", 200)]:
        with client(base, ip) as http:
            assert connect(http, f"v-{ip}").status_code == expected, ip
    pp.sync.ban_address("192.0.2.0/24")
    for ip, expected in [("192.0.2.200", 403), ("::ffff:192.0.2.9", 403), ("192.0.3.1", 200)]:
        with client(base, ip) as http:
            assert connect(http, f"v-{ip}").status_code == expected, ip
    pp.sync.ban_address("2001:db8:9:9::1")  # one IPv6 address: its /64
    with client(base, "2001:db8:9:9:abcd::2") as http:
        assert connect(http, "v-64").status_code == 403
    assert pp.sync.unban_address("2001:db8:9:9::77") is True
    assert pp.sync.unban_address("192.0.2.0/24") is True
    assert pp.sync.unban_address("192.0.2.0/24") is False
    with pytest.raises(InvalidInput, match="not an IP address"):
        pp.sync.ban_address("example.com")


def test_bans_hold_across_restarts_and_processes(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    one = make(tmp_path)
    two = make(tmp_path, storage=SQLiteStorage(tmp_path / "pp.db"))  # a second process on the same file
    base_one, base_two = serve(one), serve(two)
    one.sync.ban_address("198.51.100.99")
    with client(base_one, "198.51.100.99") as http:
        assert connect(http, "v-1").status_code == 403
    # The other process reads the stored bans again within 5 s.
    deadline = time.monotonic() + 8
    with client(base_two, "198.51.100.99") as http:
        while connect(http, "v-2").status_code != 403:
            assert time.monotonic() < deadline, "the ban did not reach the other process"
            time.sleep(0.2)
    restarted = make(tmp_path, storage=SQLiteStorage(tmp_path / "pp.db"))
    with client(serve(restarted), "198.51.100.99") as http:
        assert connect(http, "v-3").status_code == 403
    assert [b.value for b in restarted.sync.list_bans()] == ["198.51.100.99/32"]


def test_a_user_ban_covers_the_verified_user_only(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    pp = make(tmp_path, identity_secret=SECRET)
    base = serve(pp)
    signed = {"id": "u-1", "email": "a@example.com", "userHash": identity_hash(SECRET, "u-1")}
    with client(base, "198.51.100.1") as http:
        sid = connect(http, "v-1", identity=signed).json()["sessionId"]
        unverified = connect(http, "v-2", identity={"id": "u-1"}).json()["sessionId"]
        with pytest.raises(InvalidInput, match="verified user id"):
            pp.sync.ban(unverified, user=True)
        pp.sync.ban(sid, user=True)
        # Every session of the verified user, and every new one, is refused.
        assert connect(http, "v-3", identity=signed).status_code == 403
        other = connect(http, "v-4").json()["sessionId"]
        assert http.post("/identify", json={"sessionId": other, "identity": signed}).status_code == 403
        with pytest.raises(InvalidStatus) as refused:  # the WebSocket too
            ws_client.connect(f"{base.replace('http', 'ws')}/stream?sessionId={sid}", open_timeout=5)
        assert refused.value.response.status_code == 403
        # Someone merely claiming the id is not that user.
        assert http.post("/message", json={"sessionId": unverified, "content": "hi"}).status_code == 200
        assert [(b.kind, b.value) for b in pp.sync.list_bans()] == [("user", "u-1")]
        pp.sync.unban_user("u-1")
        assert connect(http, "v-5", identity=signed).status_code == 200


def test_the_trusted_proxy_itself_is_never_address_banned(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    pp = make(tmp_path)  # 127.0.0.1 is the trusted proxy
    with httpx.Client(base_url=serve(pp), timeout=10, headers=HEADERS) as http:  # no X-Forwarded-For
        sid = connect(http, "v-p").json()["sessionId"]
    assert pp.sync.get_session(sid).metadata["ip"] == "127.0.0.1"
    with pytest.raises(InvalidInput, match="trusted_proxies"):
        pp.sync.ban(sid, address=True)
    assert pp.sync.list_bans() == [] and not pp.sync.get_session(sid).banned


def test_a_storage_without_ban_methods_says_so() -> None:
    pp = PocketPing(storage=SeedStorage())
    with pytest.raises(StorageCapabilityError, match="save_ban"):
        pp.sync.ban_address("192.0.2.1")
    memory = PocketPing(storage=MemoryStorage())
    memory.sync.ban_user("u-9")
    assert [b.value for b in memory.sync.list_bans()] == ["u-9"]
