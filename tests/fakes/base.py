"""What the fake platforms share: call log, fault injection, latency, a live server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..conftest import LiveServer


@dataclass
class Call:
    method: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


class FakePlatform:
    """Subclasses build ``self.app``; ``start()`` serves it on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.faults: deque[tuple[str | None, int, float | None]] = deque()
        self.down_for: set[str] = set()  # methods answering 500 until cleared
        self.latency = 0.0
        self.server: LiveServer | None = None
        self.app: Any = None

    def start(self) -> FakePlatform:
        self.server = LiveServer(self.app).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def fail(
        self, count: int = 1, status: int = 500, *, method: str | None = None, retry_after: float | None = None
    ) -> None:
        """The next ``count`` calls (of ``method``, or any) answer ``status``."""
        with self.lock:
            for _ in range(count):
                self.faults.append((method, status, retry_after))

    async def gate(self, method: str) -> tuple[int, float | None] | None:
        """Apply latency; return (status, retry_after) when this call must fail."""
        if self.latency:
            await asyncio.sleep(self.latency)
        with self.lock:
            if method in self.down_for:
                return 500, None
            for i, (m, status, retry_after) in enumerate(self.faults):
                if m is None or m == method:
                    del self.faults[i]
                    return status, retry_after
        return None

    def record(self, method: str, body: Any, headers: Any, status: int = 200) -> None:
        with self.lock:
            self.calls.append(Call(method, body, dict(headers), status))

    def sent(self, method: str, ok_only: bool = True) -> list[Any]:
        with self.lock:
            return [c.body for c in self.calls if c.method == method and (c.status == 200 or not ok_only)]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {getattr(predicate, '__name__', predicate)}")
