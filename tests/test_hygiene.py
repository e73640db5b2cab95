"""An early error answer never leaves unread body bytes on a keep-alive connection: a body over
the limit gets its 413 and the connection is closed (the rest of the body is never taken for the
next request); a request refused before its body is read (429 over a rate limit) has its body
drained first. Under uvicorn and under gunicorn with ``wrap_wsgi``."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pocketping import MemoryStorage, PocketPing, RateLimits

from .conftest import LiveServer, gunicorn_serving, mounted

BIG = 1_100_000  # over the 256 KiB limit of the widget endpoints
FITS = 200_000  # under it
REQUESTS = "3/minute"  # requests_per_ip of the servers below

WSGI_APP = """
from pocketping import MemoryStorage, PocketPing, RateLimits

pp = PocketPing(storage=MemoryStorage(), rate_limits=RateLimits(requests_per_ip="3/minute"))

def site(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the site"]

app = pp.wrap_wsgi(site)
"""


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed the connection once it answered
        sock.sendall(data)


def _after_oversized(
    base: tuple[str, int], path: str, *, chunked: bool, size: int = BIG
) -> tuple[int, dict[str, str], bytes, bytes]:
    """Send a body of about ``size`` bytes on a keep-alive connection, then a second request on
    it. Returns the first answer and what came back for the second (b"" if the server closed)."""
    host, port = base
    sock = socket.create_connection((host, port), timeout=10)
    try:
        body = b'{"sessionId":"s","pad":"' + b"x" * size + b'"}'
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        if chunked:
            head += "Transfer-Encoding: chunked\r\n\r\n"
            payload = head.encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        else:
            head += f"Content-Length: {len(body)}\r\n\r\n"
            payload = head.encode() + body
        sender = threading.Thread(target=_send_quietly, args=(sock, payload))
        sender.start()
        status, headers, answer = _read_response(sock)
        sender.join(10)
        second = f"GET /pocketping/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        try:
            sock.sendall(second)
            sock.settimeout(5)
            rest = sock.recv(65536)
        except OSError:
            rest = b""
        return status, headers, answer, rest
    finally:
        sock.close()


def _check(
    status: int,
    headers: dict[str, str],
    answer: bytes,
    rest: bytes,
    expected: tuple[int, str] = (413, "body_too_large"),
) -> None:
    assert (status, json.loads(answer)["error"]) == expected
    if headers.get("connection", "").lower() == "close":
        assert rest == b"", rest[:200]  # closed: the unread bytes went nowhere
    else:
        # Kept alive: the server drained the body, so the next request is read as one.
        assert rest.startswith(b"HTTP/1.1 200"), rest[:200]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("path", ["/pocketping/message", "/pocketping/typing"])
def test_uvicorn_closes_after_an_oversized_body(path: str, chunked: bool) -> None:
    pp = PocketPing(storage=MemoryStorage(), rate_limits=RateLimits(requests_per_ip=REQUESTS))
    server = LiveServer(mounted(pp)).start()
    try:
        status, headers, answer, rest = _after_oversized(("127.0.0.1", server.port), path, chunked=chunked)
        assert headers.get("connection") == "close"  # uvicorn leaves the unread body: we close
        _check(status, headers, answer, rest)
        # The server itself is fine.
        assert httpx.get(server.url + "/pocketping/health", timeout=5).status_code == 200
    finally:
        server.stop()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[int]:
    with gunicorn_serving(tmp_path, WSGI_APP, threads=4) as port:
        yield port


@pytest.mark.parametrize("path", ["/pocketping/message", "/pocketping/typing"])
def test_gunicorn_wrap_wsgi_closes_after_an_oversized_body(gunicorn: int, path: str) -> None:
    _check(*_after_oversized(("127.0.0.1", gunicorn), path, chunked=False))
    assert httpx.get(f"http://127.0.0.1:{gunicorn}/pocketping/health", timeout=5).status_code == 200


def _use_up_requests(base: str) -> None:
    for _ in range(3):  # requests_per_ip="3/minute"
        assert httpx.post(base + "/pocketping/typing", json={}, timeout=5).status_code == 400


@pytest.mark.parametrize("chunked", [False, True])
def test_uvicorn_drains_a_rate_limited_body(chunked: bool) -> None:
    pp = PocketPing(storage=MemoryStorage(), rate_limits=RateLimits(requests_per_ip=REQUESTS))
    server = LiveServer(mounted(pp)).start()
    try:
        _use_up_requests(server.url)
        status, headers, answer, rest = _after_oversized(
            ("127.0.0.1", server.port), "/pocketping/message", chunked=chunked, size=FITS
        )
        assert int(headers["retry-after"]) >= 1
        _check(status, headers, answer, rest, (429, "rate_limited"))
    finally:
        server.stop()


def test_gunicorn_wrap_wsgi_drains_a_rate_limited_body(gunicorn: int) -> None:
    _use_up_requests(f"http://127.0.0.1:{gunicorn}")
    status, headers, answer, rest = _after_oversized(
        ("127.0.0.1", gunicorn), "/pocketping/message", chunked=False, size=FITS
    )
    assert int(headers["retry-after"]) >= 1
    _check(status, headers, answer, rest, (429, "rate_limited"))
