"""Rate limits, on by default: new sessions per address, messages per session, requests per
address. Over a limit: 429, a JSON error, Retry-After in whole seconds, and nothing stored.
Driven through a real uvicorn server with HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus

from pocketping import InvalidInput, MemoryStorage, PocketPing, RateLimited, RateLimits, RedisBroker
from pocketping.policy import Policy
from pocketping.ratelimits import Limiter

from .conftest import connect
from .services import RedisServer

Serve = Callable[[PocketPing], str]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


def client(base: str, forwarded_for: str | None = None) -> httpx.Client:
    headers = {"X-PocketPing-Version": "2.6.0"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.Client(base_url=base, timeout=10, headers=headers)


def new_session(http: httpx.Client, visitor: str) -> httpx.Response:
    return http.post("/connect", json={"visitorId": visitor, "sessionId": None, "metadata": {}})


def assert_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "rate_limited" and "retry in" in r.json()["detail"]
    assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1


def test_defaults_are_documented_values() -> None:
    limits = RateLimits()
    assert (limits.sessions_per_ip, limits.messages_per_session, limits.requests_per_ip) == (
        "20/minute",
        "30/minute",
        "600/minute",
    )
    assert PocketPing(storage=MemoryStorage()).chat.limiter.limits is not None  # on by default


def test_300_new_sessions_from_one_address_stop_at_20(serve: Serve) -> None:
    pp = PocketPing(storage=MemoryStorage())
    with client(serve(pp)) as http:
        answers = [new_session(http, f"visitor-{i}") for i in range(300)]
        accepted = [r for r in answers if r.status_code == 200]
        assert len(accepted) == 20
        for r in answers[20:]:
            assert_limited(r)
        # Nothing stored for the refused ones.
        stored = asyncio.run(pp.storage.list_sessions(limit=None, include_closed=True))
        assert len(stored) == 20
        # Resuming an existing session does not count, by session id or by visitor id.
        first = accepted[0].json()
        again = http.post("/connect", json={"visitorId": first["visitorId"], "sessionId": first["sessionId"]})
        assert again.status_code == 200 and again.json()["sessionId"] == first["sessionId"]
        by_visitor = http.post("/connect", json={"visitorId": "visitor-3", "sessionId": None})
        assert by_visitor.status_code == 200
        assert by_visitor.json()["sessionId"] == accepted[3].json()["sessionId"]


def test_300_messages_to_one_session_stop_at_30(serve: Serve) -> None:
    pp = PocketPing(storage=MemoryStorage())
    with client(serve(pp)) as http:
        sid = connect(http, visitor_id="chatty")["sessionId"]
        other = connect(http, visitor_id="quiet")["sessionId"]
        answers = [http.post("/message", json={"sessionId": sid, "content": f"m{i}"}) for i in range(300)]
        assert [r.status_code for r in answers[:30]] == [200] * 30
        for r in answers[30:]:
            assert_limited(r)
        stored = http.get("/messages", params={"sessionId": sid}).json()["messages"]
        assert [m["content"] for m in stored] == [f"m{i}" for i in range(30)]
        # Another session has its own count.
        assert http.post("/message", json={"sessionId": other, "content": "hello"}).status_code == 200


def test_the_window_moves_on(serve: Serve) -> None:
    pp = PocketPing(storage=MemoryStorage(), rate_limits=RateLimits(messages_per_session="2/second"))
    with client(serve(pp)) as http:
        sid = connect(http)["sessionId"]
        for i in range(2):
            assert http.post("/message", json={"sessionId": sid, "content": f"a{i}"}).status_code == 200
        refused = http.post("/message", json={"sessionId": sid, "content": "too soon"})
        assert_limited(refused)
        assert refused.headers["retry-after"] == "1"
        time.sleep(1.1)
        assert http.post("/message", json={"sessionId": sid, "content": "later"}).status_code == 200


def test_requests_per_ip_covers_every_widget_route_and_the_stream(serve: Serve) -> None:
    pp = PocketPing(storage=MemoryStorage(), rate_limits=RateLimits(requests_per_ip="5/minute"))
    base = serve(pp)
    with client(base) as http:
        sid = connect(http)["sessionId"]  # 1
        assert http.get("/messages", params={"sessionId": sid}).status_code == 200  # 2
        assert http.post("/typing", json={"sessionId": sid, "isTyping": True}).status_code == 200  # 3
        assert http.post("/read", json={"sessionId": sid, "messageIds": []}).status_code in (200, 400)  # 4
        assert http.get("/stream", params={"sessionId": sid, "after": "x"}).status_code == 400  # 5
        assert_limited(http.post("/message", json={"sessionId": sid, "content": "hi"}))
        assert_limited(http.get("/messages", params={"sessionId": sid}))
        # Health checks, the script and the schema are not counted.
        assert http.get("/health").status_code == 200
        assert http.get("/openapi.json").status_code == 200
    url = base.replace("http://", "ws://") + f"/stream?sessionId={sid}"
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(url, open_timeout=5)
    assert refused.value.response.status_code == 403  # a refused handshake (close 1008)
    assert pp.storage  # the server stays up
    with client(base) as http:
        assert http.get("/health").status_code == 200


def test_addresses_behind_a_trusted_proxy_count_apart(serve: Serve) -> None:
    pp = PocketPing(
        storage=MemoryStorage(), trusted_proxies=["127.0.0.1"], rate_limits=RateLimits(sessions_per_ip="2/minute")
    )
    base = serve(pp)
    with client(base, "203.0.113.7") as first, client(base, "198.51.100.9") as second:
        assert [new_session(first, f"a{i}").status_code for i in range(3)] == [200, 200, 429]
        assert [new_session(second, f"b{i}").status_code for i in range(3)] == [200, 200, 429]


def test_rate_limits_none_turns_them_off(serve: Serve) -> None:
    pp = PocketPing(storage=MemoryStorage(), rate_limits=None)
    with client(serve(pp)) as http:
        assert {new_session(http, f"v{i}").status_code for i in range(60)} == {200}
        sid = connect(http, visitor_id="v1")["sessionId"]
        assert {http.post("/message", json={"sessionId": sid, "content": "x"}).status_code for _ in range(60)} == {200}


def test_one_limit_can_be_turned_off() -> None:
    limits = RateLimits(sessions_per_ip=None)
    assert limits.sessions_item is None and limits.messages_item is not None


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sessions_per_ip": "20 per fortnight"}, "sessions_per_ip"),
        ({"messages_per_session": "0/minute"}, "messages_per_session"),
        ({"requests_per_ip": 600}, "requests_per_ip"),
        ({"requests_per_ip": "600/day"}, "requests_per_ip"),
        ({"storage": "localhost:6379"}, "storage"),
    ],
)
def test_bad_settings_name_the_problem(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        RateLimits(**kwargs)  # type: ignore[arg-type]


def test_rate_limits_must_be_a_rate_limits() -> None:
    with pytest.raises(InvalidInput, match="rate_limits must be a RateLimits"):
        PocketPing(storage=MemoryStorage(), rate_limits={"sessions_per_ip": "1/minute"})  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_chat_service_refuses_with_rate_limited() -> None:
    pp = PocketPing(storage=MemoryStorage(), rate_limits=RateLimits(sessions_per_ip="1/hour"))
    await pp.chat.connect("first", client_ip="192.0.2.1")
    with pytest.raises(RateLimited) as refused:
        await pp.chat.connect("second", client_ip="192.0.2.1")
    assert 3590 <= refused.value.retry_after <= 3600  # the window started with the first session
    assert refused.value.status_code == 429
    # Sessions opened without a known address (the server API) are not counted.
    await pp.chat.connect("third")


@pytest.mark.anyio
async def test_an_unreachable_counter_storage_lets_requests_through(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every count fails, and the chat stays up.
    limiter = Limiter(RateLimits(sessions_per_ip="1/minute", storage="redis://:hunter2@127.0.0.1:1/0"))
    with caplog.at_level(logging.WARNING, logger="pocketping"):
        for _ in range(3):
            await limiter.check_new_session("192.0.2.1")
    await limiter.close()
    warnings = [r for r in caplog.records if "rate limits skipped" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per request
    assert "hunter2" not in caplog.text


def test_a_redis_broker_shares_the_counts(serve: Serve, redis_url: str) -> None:
    """Two apps (as two processes would) on one Redis: one count. Across real processes:
    tests/test_scaling.py::test_rate_limits_hold_across_processes."""
    limits = RateLimits(sessions_per_ip="4/minute")
    channel = f"limits-{time.monotonic_ns()}"
    apps = [
        PocketPing(storage=MemoryStorage(), broker=RedisBroker(redis_url, channel=channel), rate_limits=limits)
        for _ in range(2)
    ]
    assert all(pp.chat.limiter.shared for pp in apps)
    with client(serve(apps[0])) as a, client(serve(apps[1])) as b:
        codes = [new_session(http, f"v{i}").status_code for i, http in enumerate([a, b, a, b, a, b])]
    assert codes == [200, 200, 200, 200, 429, 429]


def test_an_untrusted_proxy_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    policy = Policy()
    with caplog.at_level(logging.WARNING, logger="pocketping"):
        assert policy.client_ip("127.0.0.1", "203.0.113.7") == "127.0.0.1"
        assert policy.client_ip("127.0.0.1", "198.51.100.9") == "127.0.0.1"
    named = [r for r in caplog.records if "not in trusted_proxies" in r.getMessage()]
    assert len(named) == 1
