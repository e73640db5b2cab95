"""Client addresses: one canonical form per address for filters, rate limits and the stored
``metadata["ip"]``; IPv6 clients counted by prefix; one trusted forwarding header, whose hops
may carry ports and brackets. Driven through real servers on 127.0.0.1, behind 127.0.0.1 as a
trusted proxy, and on a dual-stack socket where IPv4 clients arrive as ``::ffff:a.b.c.d``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from pocketping import InvalidInput, IpFilter, MemoryStorage, PocketPing, RateLimits
from pocketping.policy import Policy

from .conftest import mounted


@pytest.fixture
def serve(serve_unproxied: Callable[[PocketPing], str]) -> Callable[[PocketPing], str]:
    return serve_unproxied


ONE_V6 = [
    "2001:db8::1",
    "2001:DB8::1",
    "2001:0db8:0000:0000:0000:0000:0000:0001",
    "2001:db8:0:0::0:1",
    "2001:db8::1%eth0",
    "[2001:db8::1]",
    "[2001:db8::1]:4444",
    "2001:Db8::0001",
    "2001:db8::1%25",
    "2001:db8:0::1",
]
ONE_SLASH_64 = [f"2001:db8:aa:bb:{i:x}::{i + 1:x}" for i in range(10)]
MAPPED = ["::ffff:198.51.100.7", "::ffff:c633:6407", "64:ff9b::198.51.100.7", "::FFFF:198.51.100.7"]


def statuses(base: str, forwarded: list[str], header: str = "X-Forwarded-For") -> list[int]:
    with httpx.Client(base_url=base, timeout=10) as http:
        return [
            http.post("/connect", json={"visitorId": f"v-{i}", "sessionId": None}, headers={header: value}).status_code
            for i, value in enumerate(forwarded)
        ]


def test_spellings_of_one_address_are_one_address() -> None:
    from pocketping.addresses import client_key

    policy = Policy(trusted_proxies=["10.0.0.1"])
    assert {policy.client_ip("10.0.0.1", v) for v in ONE_V6} == {"2001:db8::1"}
    assert {policy.client_ip("10.0.0.1", v) for v in MAPPED} == {"198.51.100.7"}
    assert {policy.client_ip(v) for v in MAPPED} == {"198.51.100.7"}  # peers too
    assert policy.client_ip("10.0.0.1", "203.0.113.11:4444") == "203.0.113.11"
    assert policy.client_ip("10.0.0.1", "unknown") == "10.0.0.1"
    assert {client_key(v) for v in ONE_SLASH_64} == {"2001:db8:aa:bb::/64"}
    assert client_key("2001:db8:aa:bb::1", 48) == "2001:db8:aa::/48"
    assert client_key("::ffff:10.1.2.3") == "10.1.2.3"


@pytest.mark.parametrize("addresses", [ONE_V6, ONE_SLASH_64], ids=["spellings", "one-64"])
def test_one_ipv6_client_gets_one_rate_limit_count(addresses: list[str], serve: Callable[[PocketPing], str]) -> None:
    pp = PocketPing(
        storage=MemoryStorage(), trusted_proxies=["127.0.0.1"], rate_limits=RateLimits(sessions_per_ip="5/minute")
    )
    got = statuses(serve(pp), addresses)
    assert got == [200] * 5 + [429] * 5
    stored = {s.metadata["ip"] for s in pp.sync.get_sessions()}
    assert all("%" not in ip and "[" not in ip and ip == ip.lower() for ip in stored), stored
    if addresses is ONE_V6:
        assert stored == {"2001:db8::1"}


def test_the_ipv6_prefix_is_configurable(serve: Callable[[PocketPing], str]) -> None:
    with pytest.raises(InvalidInput, match="ipv6_prefix"):
        PocketPing(storage=MemoryStorage(), ipv6_prefix=16)
    pp = PocketPing(
        storage=MemoryStorage(),
        trusted_proxies=["127.0.0.1"],
        ipv6_prefix=128,
        rate_limits=RateLimits(sessions_per_ip="5/minute"),
    )
    assert statuses(serve(pp), ONE_SLASH_64) == [200] * 10  # ten hosts, counted apart


def test_ipv4_rules_match_ipv4_addresses_in_ipv6_form(serve: Callable[[PocketPing], str]) -> None:
    pp = PocketPing(
        storage=MemoryStorage(), trusted_proxies=["127.0.0.1"], ip_filter=IpFilter(deny=["198.51.100.0/24"])
    )
    base = serve(pp)
    assert statuses(base, MAPPED) == [403] * len(MAPPED)
    assert statuses(base, ["198.51.101.7", "2001:db8::7"]) == [200, 200]
    # A rule written in mapped form covers the IPv4 addresses too.
    assert IpFilter(deny=["::ffff:198.51.100.0/120"]).allows("198.51.100.9") is False


@pytest.fixture
def dual_stack() -> Iterator[Callable[[PocketPing], str]]:
    """Serve on an IPv6 socket bound to ``::ffff:127.0.0.1``: IPv4 clients arrive mapped, as on
    a dual-stack listener (``--host ::``), yet nothing listens beyond the loopback address."""
    servers: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(pp: PocketPing) -> str:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::ffff:127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(mounted(pp), log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        servers.append((server, thread, sock))
        return f"http://127.0.0.1:{port}/pocketping"

    yield start
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_a_dual_stack_listener_applies_ipv4_rules(dual_stack: Callable[[PocketPing], str]) -> None:
    seen: list[Any] = []
    open_pp = PocketPing(storage=MemoryStorage(), on_session_start=seen.append)
    with httpx.Client(base_url=dual_stack(open_pp), timeout=10) as http:
        assert http.post("/connect", json={"visitorId": "v", "sessionId": None}).status_code == 200
    assert [s.metadata["ip"] for s in open_pp.sync.get_sessions()] == ["127.0.0.1"]  # not ::ffff:127.0.0.1

    closed = PocketPing(storage=MemoryStorage(), ip_filter=IpFilter(deny=["127.0.0.0/8"]))
    with httpx.Client(base_url=dual_stack(closed), timeout=10) as http:
        r = http.post("/connect", json={"visitorId": "v", "sessionId": None})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"


def test_hops_with_ports_and_brackets_name_their_client(serve: Callable[[PocketPing], str]) -> None:
    pp = PocketPing(storage=MemoryStorage(), trusted_proxies=["127.0.0.1"], rate_limits=None)
    base = serve(pp)
    hops = ["203.0.113.11:4444", "[2001:db8::5]:443", '"[2001:db8::6]"', "198.51.100.1, 203.0.113.12:80"]
    assert statuses(base, hops) == [200] * 4
    ips = sorted(s.metadata["ip"] for s in pp.sync.get_sessions())
    assert ips == sorted(["203.0.113.11", "2001:db8::5", "2001:db8::6", "203.0.113.12"])


def test_a_proxy_that_sets_only_x_real_ip_is_not_overruled_by_the_client(
    serve: Callable[[PocketPing], str],
) -> None:
    pp = PocketPing(
        storage=MemoryStorage(),
        trusted_proxies=["127.0.0.1"],
        client_ip_header="X-Real-IP",
        ip_filter=IpFilter(deny=["203.0.113.0/24"]),
        rate_limits=RateLimits(sessions_per_ip="2/minute"),
    )
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        # nginx sets X-Real-IP to the client it saw; the client adds an X-Forwarded-For of its own.
        codes = [
            http.post(
                "/connect",
                json={"visitorId": f"v-{i}", "sessionId": None},
                headers={"X-Real-IP": "198.51.100.20", "X-Forwarded-For": f"192.0.2.{i}"},
            ).status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 429, 429]  # one client, whatever it claims
        denied = http.post(
            "/connect",
            json={"visitorId": "v-x", "sessionId": None},
            headers={"X-Real-IP": "203.0.113.9", "X-Forwarded-For": "192.0.2.200"},
        )
        assert denied.status_code == 403
    assert {s.metadata["ip"] for s in pp.sync.get_sessions()} == {"198.51.100.20"}


def test_a_client_cannot_give_its_own_address(serve: Callable[[PocketPing], str]) -> None:
    pp = PocketPing(storage=MemoryStorage())
    with httpx.Client(base_url=serve(pp), timeout=10) as http:
        body = {"visitorId": "v-ip", "sessionId": None, "metadata": {"ip": "192.0.2.66", "url": "https://x.example/"}}
        assert http.post("/connect", json=body).status_code == 200
    [session] = pp.sync.get_sessions()
    assert session.metadata["ip"] == "127.0.0.1" and session.metadata["url"] == "https://x.example/"


def test_the_forwarded_header(serve: Callable[[PocketPing], str]) -> None:
    pp = PocketPing(storage=MemoryStorage(), trusted_proxies=["127.0.0.1"], client_ip_header="Forwarded")
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        r = http.post(
            "/connect",
            json={"visitorId": "v-f", "sessionId": None},
            headers={
                "Forwarded": 'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"',
                "X-Forwarded-For": "1.2.3.4",
            },
        )
        assert r.status_code == 200
    assert [s.metadata["ip"] for s in pp.sync.get_sessions()] == ["2001:db8:cafe::17"]
    with pytest.raises(InvalidInput, match="client_ip_header"):
        PocketPing(storage=MemoryStorage(), client_ip_header="X-Client-IP")
