"""PocketPing (this repository) built as the README's quick start tells users to, mounted at
/pocketping, plus the bench's operator-push trigger.

``BENCH_HOOKS=seed`` (default): the three hooks of the README's quick start, as plain functions
that log the session id, the message content and the event name at INFO. Logging is left
unconfigured (root level WARNING), as in the README's snippet, so they print nothing; they still
cost what a hook costs (queued per session, run on the hook worker threads).
``BENCH_HOOKS=none``: no hooks.

Rate limits are on, as by default, counted in memory on every request (``requests_per_ip``),
new session (``sessions_per_ip``) and message (``messages_per_session``); their thresholds are
raised above the load, which comes from one address (127.0.0.1) at thousands of requests a
second and would otherwise be refused from the 21st session on. ``BENCH_LIMITS=off``:
``rate_limits=None`` (what the limits cost).

``BENCH_STORAGE=memory`` (default), ``sqlite`` (SQLiteStorage with ``synchronous=FULL``, the
durable default, in ``BENCH_TMP``) or ``postgres`` (``PostgresStorage(BENCH_PG_DSN)``, its
default pool).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pocketping import MemoryStorage, PocketPing, PostgresStorage, RateLimits, SQLiteStorage
from pocketping.files import LocalFileStore

log = logging.getLogger(__name__)


def on_session_start(session: Any) -> None:
    log.info("new session %s", session.id)


def on_message(session: Any, message: Any) -> None:
    log.info("message: %s", message.content)


def on_event(session: Any, event: Any) -> None:
    log.info("event: %s", event.name)


HOOKS = os.environ.get("BENCH_HOOKS", "seed")
STORAGE = os.environ.get("BENCH_STORAGE", "memory")
if HOOKS not in ("seed", "none"):
    raise SystemExit(f"BENCH_HOOKS must be seed or none, not {HOOKS!r}")

tmp = Path(os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="pp-bench-"))
storage: Any
if STORAGE == "memory":
    storage = MemoryStorage()
elif STORAGE == "sqlite":
    storage = SQLiteStorage(tmp / "bench.db", synchronous="FULL")
elif STORAGE == "postgres":
    storage = PostgresStorage(os.environ["BENCH_PG_DSN"])
else:
    raise SystemExit(f"BENCH_STORAGE must be memory, sqlite or postgres, not {STORAGE!r}")

seed = HOOKS == "seed"
pp = PocketPing(
    welcome_message="Hi! How can we help?",
    on_session_start=on_session_start if seed else None,
    on_message=on_message if seed else None,
    on_event=on_event if seed else None,
    storage=storage,
    files=LocalFileStore(tmp / "uploads"),  # not in the working directory
    rate_limits=None
    if os.environ.get("BENCH_LIMITS") == "off"
    else RateLimits(
        sessions_per_ip="100000000/hour", messages_per_session="100000000/hour", requests_per_ip="100000000/hour"
    ),
)


async def push(request: Request) -> JSONResponse:
    body = await request.json()
    content = body.get("content", "Hello from the operator")
    for sid in body["sessionIds"]:
        await pp.send_message(sid, content=content, type="operator")
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[Route("/bench/push", push, methods=["POST"]), Mount("/pocketping", app=pp.asgi_app)],
    lifespan=pp.lifespan,
)
