"""Helpers for testing your own hooks and handlers, without a browser or a chat platform.

:class:`WidgetClient` talks to your ``PocketPing`` over the same HTTP and WebSocket endpoints
the widget uses, served by uvicorn on a thread of the test process (127.0.0.1, a free port)::

    from pocketping import MemoryStorage, PocketPing
    from pocketping.testing import FakeBridge, WidgetClient

    def test_greets_new_visitors():
        seen = []
        pp = PocketPing(storage=MemoryStorage(), on_message=lambda s, m: seen.append(m.content))
        with WidgetClient(pp) as widget:
            widget.connect()
            widget.send("Hello?")
            widget.wait_for_hooks()
        assert seen == ["Hello?"]

:class:`FakeBridge` is a bridge that keeps what it would post to a chat platform in
``posts`` and lets a test answer as an operator with :meth:`FakeBridge.reply`.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from .bridges.base import Bridge
from .models import Session

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

    from .core import PocketPing

__all__ = ["FakeBridge", "Post", "Stream", "WidgetClient"]


class WidgetClient:
    """A visitor's widget. Use it as a context manager: it serves ``pp`` (mounted at
    ``/pocketping``) for the duration, with PocketPing's startup and shutdown (pending hooks
    drained) as a server would run them."""

    def __init__(self, pp: PocketPing, *, visitor_id: str | None = None, widget_version: str = "2.6.0") -> None:
        self.pp = pp
        self.visitor_id = visitor_id or f"test-{secrets.token_hex(6)}"
        self.session_id: str | None = None
        self.widget_version = widget_version
        self.base_url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None

    def __enter__(self) -> WidgetClient:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Mount

        app = Starlette(routes=[Mount("/pocketping", app=self.pp.asgi_app)], lifespan=self.pp.lifespan)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{port}/pocketping"
        self._http = httpx.Client(
            base_url=self.base_url, timeout=10, headers={"X-PocketPing-Version": self.widget_version}
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            self._http.close()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)

    @property
    def http(self) -> httpx.Client:
        """An HTTP client for the mount (``widget.http.post("/typing", json=...)``)."""
        if self._http is None:
            raise RuntimeError("use WidgetClient as a context manager: with WidgetClient(pp) as widget: ...")
        return self._http

    def _sid(self) -> str:
        if self.session_id is None:
            raise RuntimeError("call connect() first")
        return self.session_id

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        if r.status_code >= 400:
            raise AssertionError(f"POST {path} answered {r.status_code}: {r.text}")
        return dict(r.json())

    def connect(
        self, *, metadata: dict[str, Any] | None = None, identity: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST /connect`` (resuming this client's session after the first call)."""
        body: dict[str, Any] = {"visitorId": self.visitor_id, "sessionId": self.session_id}
        body["metadata"] = metadata or {"url": "http://testserver/", "userAgent": "pocketping.testing"}
        if identity is not None:
            body["identity"] = identity
        answer = self._post("/connect", body)
        self.session_id = answer["sessionId"]
        return answer

    def send(self, content: str, *, reply_to: str | None = None) -> dict[str, Any]:
        """A visitor message; returns ``{"messageId", "timestamp"}``."""
        body: dict[str, Any] = {"sessionId": self._sid(), "content": content}
        if reply_to is not None:
            body["replyTo"] = reply_to
        return self._post("/message", body)

    def messages(self, after: str | None = None) -> list[dict[str, Any]]:
        """``GET /messages``: the session's messages as the widget reads them."""
        params = {"sessionId": self._sid(), **({"after": after} if after else {})}
        r = self.http.get("/messages", params=params)
        r.raise_for_status()
        return list(r.json()["messages"])

    def identify(self, **identity: Any) -> None:
        """``POST /identify`` with ``id=...`` and whatever else the site knows."""
        self._post("/identify", {"sessionId": self._sid(), "identity": identity})

    @contextmanager
    def stream(self) -> Iterator[Stream]:
        """The session's WebSocket ``/stream``."""
        from websockets.sync.client import connect

        url = self.base_url.replace("http://", "ws://", 1) + f"/stream?sessionId={self._sid()}"
        with connect(url, open_timeout=10) as ws:
            yield Stream(ws)

    def trigger(self, name: str, **data: Any) -> None:
        """A custom event from the page (``PocketPing.trigger(name, data)``), over the WebSocket."""
        hooks = self.pp.hooks
        before = hooks.dispatched
        with self.stream() as ws:
            ws.send_json({"type": "event", "data": {"name": name, "data": data}})
            deadline = time.monotonic() + 5
            while hooks.has("event") and hooks.dispatched == before:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the server did not take the {name!r} event within 5 s")
                time.sleep(0.005)
        self.wait_for_hooks()

    def wait_for_hooks(self, timeout: float = 5.0) -> None:
        """Wait until every hook call queued so far has run."""
        if not self.pp.sync.run(self.pp.hooks.join(timeout)):
            raise AssertionError(f"hooks still running after {timeout} s")


class Stream:
    """An open WebSocket ``/stream``: pushes are ``{"type", "data"}`` objects."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def receive_json(self, timeout: float = 5.0) -> dict[str, Any]:
        return dict(json.loads(self.ws.recv(timeout)))

    def next(self, type: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next push of ``type`` (``message``, ``typing``, ``event``, …), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.receive_json(max(0.01, deadline - time.monotonic()))
            if frame["type"] == type:
                return frame

    def send_json(self, data: dict[str, Any]) -> None:
        self.ws.send(json.dumps(data))


@dataclass
class Post:
    """What :class:`FakeBridge` would have posted."""

    thread: str
    text: str
    kind: str = "post"


class FakeBridge(Bridge):
    """A chat platform in memory: threads are ``thread-<n>``, every post lands in ``posts``."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[Post] = []
        self.threads: dict[str, str] = {}  # thread -> session id

    def escape(self, text: str) -> str:
        return text

    def bold(self, text: str) -> str:
        return text

    async def create_thread(self, session: Session, header: str, nonce: str) -> str:
        thread = f"thread-{len(self.threads) + 1}"
        self.threads[thread] = session.id
        return thread

    async def post(self, thread: str, text: str, nonce: str) -> str:
        self.posts.append(Post(thread, text))
        return f"post-{len(self.posts)}"

    async def edit(self, thread: str, platform_id: str, text: str) -> None:
        self.posts.append(Post(thread, text, "edit"))

    async def remove(self, thread: str, platform_id: str) -> None:
        self.posts.append(Post(thread, platform_id, "remove"))

    def texts(self, session_id: str) -> list[str]:
        """Everything posted in the session's thread, in order."""
        return [p.text for p in self.posts if self.threads.get(p.thread) == session_id]

    async def reply(self, session_id: str, text: str, *, author: str = "Operator") -> None:
        """An operator writes ``text`` in the session's thread (commands such as ``!close`` work)."""
        await self.operator_text(session_id, text, f"in-{secrets.token_hex(4)}", author)

    async def delivered(self, timeout: float = 5.0) -> bool:
        """Wait until every queued post has been made."""
        assert self.hub is not None
        return await self.hub.drain(timeout)
