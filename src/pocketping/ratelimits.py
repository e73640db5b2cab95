"""Abuse limits on the widget endpoints, counted with the ``limits`` library.

:class:`RateLimits` is the configuration (``PocketPing(rate_limits=...)``); :class:`Limiter`
counts. The front of the ASGI app checks ``requests_per_ip`` on every widget request, the
chat service checks ``sessions_per_ip`` when a visitor starts a session and
``messages_per_session`` before it stores a visitor message, so a refused call stores
nothing. Counting uses fixed windows: one counter per client and limit, whatever the client
sends (memory bounded by addresses, not requests), and an exact ``Retry-After``. Counts live in
memory, or in Redis when the app has a Redis broker (or ``RateLimits(storage="redis://...")``),
where every process shares them.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from .errors import InvalidInput, RateLimited

log = logging.getLogger("pocketping")

RATE = re.compile(r"^\s*[1-9]\d*\s*/\s*(second|minute|hour)\s*$")

#: Seconds between two warnings about a failing counter storage.
WARN_EVERY = 60.0
#: Seconds the limits are skipped after their storage failed, before it is tried again (so
#: that an unreachable Redis does not hold every request for its timeout).
RETRY_AFTER_FAILURE = 5.0


def _rate(name: str, value: str | None) -> RateLimitItem | None:
    if value is None:
        return None
    if not isinstance(value, str) or not RATE.match(value):
        raise InvalidInput(f"RateLimits {name}: {value!r} is not a rate such as '20/minute' (N/second|minute|hour)")
    return parse(value.replace(" ", ""))


class RateLimits:
    """How much one client may do, as ``"N/second"``, ``"N/minute"`` or ``"N/hour"``; ``None``
    turns one limit off.

    * ``sessions_per_ip``: new sessions per client address (resuming one does not count);
    * ``messages_per_session``: visitor messages per session;
    * ``requests_per_ip``: requests to the widget endpoints per client address (a WebSocket
      or SSE stream counts once, when it opens);
    * ``storage``: where the counts live, a ``limits`` storage URI such as
      ``"redis://localhost:6379/0"``. Default: the app's :class:`~pocketping.RedisBroker`
      when it has one (every process shares the counts), else this process's memory.

    Over a limit, the call is refused with :class:`~pocketping.RateLimited` (HTTP 429 with
    ``Retry-After``) and nothing is stored.
    """

    def __init__(
        self,
        *,
        sessions_per_ip: str | None = "20/minute",
        messages_per_session: str | None = "30/minute",
        requests_per_ip: str | None = "600/minute",
        storage: str | None = None,
    ) -> None:
        self.sessions_per_ip = sessions_per_ip
        self.messages_per_session = messages_per_session
        self.requests_per_ip = requests_per_ip
        self.sessions_item = _rate("sessions_per_ip", sessions_per_ip)
        self.messages_item = _rate("messages_per_session", messages_per_session)
        self.requests_item = _rate("requests_per_ip", requests_per_ip)
        if storage is not None and (not isinstance(storage, str) or "://" not in storage):
            raise InvalidInput(f"RateLimits storage must be a URI such as 'redis://localhost:6379/0', not {storage!r}")
        self.storage = storage

    def __repr__(self) -> str:  # the storage URI may carry a password
        return (
            f"RateLimits(sessions_per_ip={self.sessions_per_ip!r}, messages_per_session={self.messages_per_session!r},"
            f" requests_per_ip={self.requests_per_ip!r})"
        )


def _storage(uri: str) -> tuple[Storage, Any]:
    """The ``limits`` storage for ``uri`` and the Redis connection pool it uses (or None)."""
    uri = uri if uri.startswith("async+") else "async+" + uri
    options: dict[str, Any] = {}
    pool = None
    if uri.startswith(("async+redis://", "async+rediss://")):
        try:
            from redis.asyncio import ConnectionPool
        except ImportError as exc:
            raise ImportError("rate limits in Redis need the redis package: pip install 'pocketping[redis]'") from exc
        # redis-py is the client the Redis broker already uses; a pool of our own can be closed
        # at shutdown, and a dead server must not hold a request for long (Limiter.hit then
        # lets it through).
        pool = ConnectionPool.from_url(uri.removeprefix("async+"), socket_timeout=1.0, socket_connect_timeout=1.0)
        options = {"implementation": "redispy", "connection_pool": pool}
    try:
        storage = storage_from_string(uri, **options)
    except Exception as exc:
        raise InvalidInput(f"RateLimits storage: {exc}") from None
    if not isinstance(storage, Storage):
        raise InvalidInput(f"RateLimits storage: {uri!r} has no asyncio implementation")
    return storage, pool


class Limiter:
    """Counts hits for one app. ``namespace`` keeps apps that share a Redis apart."""

    def __init__(
        self,
        limits: RateLimits | None,
        *,
        redis_url: str | None = None,
        namespace: str = "pocketping",
        client_key: Callable[[str], str | None] | None = None,
    ) -> None:
        self.limits = limits
        # Addresses are counted by what names one client (an IPv6 client's /64, say).
        self._client_key = client_key or (lambda ip: ip)
        self.namespace = namespace
        self._strategy: FixedWindowRateLimiter | None = None
        self._failed_at = -WARN_EVERY
        self._skip_until = 0.0
        self._pool: Any = None
        self.shared = False
        if limits is None:
            return
        uri = limits.storage or redis_url
        self.shared = uri is not None and not uri.startswith(("memory", "async+memory"))
        storage, self._pool = _storage(uri) if uri else (MemoryStorage(), None)
        self._strategy = FixedWindowRateLimiter(storage)

    def __repr__(self) -> str:
        return f"Limiter({self.limits!r}, shared={self.shared})"

    async def close(self) -> None:
        """Close the connections to the counter storage (shutdown)."""
        if self._pool is not None:
            await self._pool.disconnect()

    @property
    def requests(self) -> bool:
        """Whether ``requests_per_ip`` is on (the front skips the check otherwise)."""
        return self.limits is not None and self.limits.requests_item is not None

    async def check_request(self, ip: str | None) -> None:
        """Count one widget request from ``ip``; :class:`RateLimited` over ``requests_per_ip``."""
        if self.limits is not None and ip:
            key = self._client_key(ip) or ip
            await self.hit(self.limits.requests_item, "requests", key, "too many requests from this address")

    async def check_new_session(self, ip: str | None) -> None:
        """Count one new session from ``ip``; :class:`RateLimited` over ``sessions_per_ip``."""
        if self.limits is not None and ip:
            key = self._client_key(ip) or ip
            await self.hit(self.limits.sessions_item, "sessions", key, "too many new chat sessions from this address")

    async def check_message(self, session_id: str) -> None:
        """Count one visitor message; :class:`RateLimited` over ``messages_per_session``."""
        if self.limits is not None:
            await self.hit(self.limits.messages_item, "messages", session_id, "too many messages in this session")

    async def hit(self, item: RateLimitItem | None, kind: str, key: str, refusal: str) -> None:
        """Count one hit of ``key`` against ``item``. When the counter storage fails, the call
        goes through (a chat that stays up beats a limit), a warning is logged, and the limits
        rest for :data:`RETRY_AFTER_FAILURE` seconds."""
        if item is None or self._strategy is None:
            return
        if self._skip_until and time.monotonic() < self._skip_until:
            return
        try:
            if await self._strategy.hit(item, self.namespace, kind, key):
                return
            stats = await self._strategy.get_window_stats(item, self.namespace, kind, key)
        except Exception as exc:
            now = time.monotonic()
            self._skip_until = now + RETRY_AFTER_FAILURE
            if now - self._failed_at >= WARN_EVERY:
                self._failed_at = now
                log.warning("rate limits skipped: their counter storage failed (%s)", type(exc).__name__)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"{refusal}; retry in {retry_after} s", retry_after=retry_after)
