"""Test helpers shared by the bridge tests: a visitor on a real server, waiting on stored state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from pocketping import PocketPing
from pocketping.bridges import Bridge

from ..conftest import SSEReader

VISITOR_META = {
    "url": "https://shop.example/pricing?plan=pro",
    "referrer": "https://www.google.com/",
    "language": "fr-FR",
    "userAgent": "pytest",
}


def fast(bridge: Bridge) -> Bridge:
    """Short timeouts and backoff so tests run in seconds (still bounded and exponential)."""
    bridge.timeout = 5.0
    bridge.retry_base = 0.05
    bridge.retry_cap = 0.5
    return bridge


class Visitor:
    """A widget-like client: /connect, POST /message, and an SSE stream."""

    def __init__(self, base: str, identity: dict[str, Any] | None = None) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10, headers={"X-PocketPing-Version": "2.6.0"})
        body: dict[str, Any] = {"visitorId": f"v-{time.monotonic_ns()}", "sessionId": None, "metadata": VISITOR_META}
        if identity:
            body["identity"] = identity
        r = self.http.post("/connect", json=body)
        assert r.status_code == 200, r.text
        self.session_id: str = r.json()["sessionId"]
        self.stream = SSEReader(f"{base}/stream?sessionId={self.session_id}")

    def say(self, text: str) -> str:
        r = self.http.post("/message", json={"sessionId": self.session_id, "content": text, "sender": "visitor"})
        assert r.status_code == 200, r.text
        return str(r.json()["messageId"])

    def next_operator_message(self, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.stream.next(timeout=max(0.01, deadline - time.monotonic()), type="message")
            if event["json"]["data"]["sender"] == "operator":
                return event["json"]["data"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.stream.close()
        self.http.close()


def stored(pp: PocketPing, session_id: str, sender: str | None = None) -> list[Any]:
    return [m for m in pp.sync.get_messages(session_id) if sender is None or m.sender == sender]


def key(pp: PocketPing, name: str) -> str | None:
    assert pp.bridge_hub is not None
    return pp.sync.run(pp.bridge_hub.store.bridge_key_get(name))


def drained(pp: PocketPing, timeout: float = 10.0) -> bool:
    assert pp.bridge_hub is not None
    return bool(pp.sync.run(pp.bridge_hub.drain(timeout)))


def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s")
