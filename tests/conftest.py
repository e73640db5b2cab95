"""Shared fixtures: a real uvicorn server on 127.0.0.1, and real HTTP / WS / SSE clients."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from pocketping import MemoryStorage, PocketPing

from . import services


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_services() -> Iterator[None]:
    """Stops, by PID, the servers that tests/services.py started on demand (PostgreSQL)."""
    yield
    services.stop_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """``check()``'s first truthy answer, polled every 50 ms; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_healthy(
    base: str, proc: subprocess.Popen[Any] | None = None, timeout: float = 15.0, path: str = "/pocketping/health"
) -> None:
    """Wait until ``<base><path>`` answers 200 (a server started as a process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(base + path, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{base} did not answer {path}")
        time.sleep(0.05)


@contextlib.contextmanager
def gunicorn_serving(directory: Path, source: str, *, threads: int) -> Iterator[int]:
    """gunicorn (gthread, ``threads`` threads) serving ``app`` of the module ``source`` on
    127.0.0.1; yields its port, stops it by its PID."""
    (directory / "served_app.py").write_text(source)
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "-k", "gthread", "--threads", str(threads),
           "-b", f"127.0.0.1:{port}", "--chdir", str(directory), "served_app:app"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=20)
        yield port
    finally:
        services.stop_pid(proc)


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A webhook endpoint on 127.0.0.1 with a fresh secret (``tests/receivers.py``)."""
    from pocketping import new_webhook_secret

    from .receivers import Receiver

    r = Receiver(new_webhook_secret())
    r.server.start()
    yield r
    r.server.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[Any, int]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: ``(mailbox, port)``."""
    from aiosmtpd.controller import Controller

    from .receivers import Mailbox

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def llm() -> Iterator[Any]:
    """A fake OpenAI-compatible chat-completions server on 127.0.0.1 (``tests/fakes/openai.py``);
    it expects no API key unless one is set on it."""
    from .fakes.openai import FakeOpenAI

    fake = FakeOpenAI(api_key=None)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def tg() -> Iterator[Any]:
    """A fake Telegram Bot API on 127.0.0.1 (``tests/fakes/telegram.py``, which imports this module)."""
    from .fakes.telegram import FakeTelegram

    fake = FakeTelegram()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def slack() -> Iterator[Any]:
    """A fake Slack Web API and Events API on 127.0.0.1 (``tests/fakes/slack.py``)."""
    from .fakes.slack import FakeSlack

    fake = FakeSlack()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def dc() -> Iterator[Any]:
    """A fake Discord REST API and Gateway on 127.0.0.1 (``tests/fakes/discord.py``)."""
    from .fakes.discord import FakeDiscord

    fake = FakeDiscord()
    fake.start()
    yield fake
    fake.stop()


class LiveServer:
    """A uvicorn server in a thread, serving ``app`` on 127.0.0.1:<free port>."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        config = {"log_level": "warning", **config}
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on", **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def mounted(pp: PocketPing) -> Starlette:
    """The way users mount it: a host app with PocketPing at /pocketping."""
    return Starlette(routes=[Mount("/pocketping", app=pp.asgi_app)], lifespan=pp.lifespan)


@pytest.fixture
def serve() -> Iterator[Callable[[PocketPing], str]]:
    """``base = serve(pp)``: start a server for ``pp``; returns the mount URL."""
    servers: list[LiveServer] = []

    def start(pp: PocketPing) -> str:
        server = LiveServer(mounted(pp)).start()
        servers.append(server)
        return server.url + "/pocketping"

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def serve_unproxied() -> Iterator[Callable[[PocketPing], str]]:
    """Like ``serve``, with uvicorn's own proxy-header handling off: PocketPing alone reads the
    forwarding headers, as behind a proxy uvicorn was not told about."""
    servers: list[LiveServer] = []

    def start(pp: PocketPing) -> str:
        server = LiveServer(mounted(pp), proxy_headers=False).start()
        servers.append(server)
        return server.url + "/pocketping"

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def pp() -> PocketPing:
    return PocketPing(storage=MemoryStorage(), welcome_message="Hi! How can we help?", sse_heartbeat=0.5)


@pytest.fixture
def base(pp: PocketPing, serve: Callable[[PocketPing], str]) -> str:
    return serve(pp)


@pytest.fixture
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10, headers={"X-PocketPing-Version": "2.6.0"}) as client:
        yield client


def connect(http: httpx.Client, visitor_id: str = "lx8k2m1q-4f9a0c2zb", **extra: Any) -> dict[str, Any]:
    body = {
        "visitorId": visitor_id,
        "sessionId": None,
        "metadata": {"url": "http://127.0.0.1/pricing", "language": "en-US", "userAgent": "pytest"},
        **extra,
    }
    r = http.post("/connect", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


class SSEReader:
    """Reads an SSE stream on a thread; parsed events land in ``events``."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.comments: list[str] = []
        self.response_headers: httpx.Headers | None = None
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.opened.wait(10):
            raise RuntimeError("SSE stream did not open")

    def _run(self) -> None:
        try:
            self._read()
        except (httpx.HTTPError, RuntimeError, ValueError):
            pass  # closed by the test, or the server went away
        finally:
            self.opened.set()

    def _read(self) -> None:
        with self._client.stream("GET", self.url, headers=self.headers) as r:
            self.status = r.status_code
            self.response_headers = r.headers
            self.opened.set()
            event: dict[str, Any] = {}
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if "data" in event:
                        event["json"] = json.loads(event["data"])
                        self.events.put(event)
                    event = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    key, _, value = line.partition(":")
                    event[key] = value[1:] if value.startswith(" ") else value

    def next(self, timeout: float = 5.0, type: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if type is None or event["json"]["type"] == type:
                return event

    def close(self) -> None:
        self._stop.set()
        self._client.close()
