"""PocketPing (this repository) mounted at /pocketping, plus the bench's operator-push trigger.

``BENCH_STORAGE=memory`` (default) or ``sqlite`` (SQLiteStorage with ``synchronous=FULL``,
the durable default, in ``BENCH_TMP``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pocketping import MemoryStorage, PocketPing, SQLiteStorage
from pocketping.files import LocalFileStore

tmp = Path(os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="pp-bench-"))
if os.environ.get("BENCH_STORAGE", "memory") == "sqlite":
    storage = SQLiteStorage(tmp / "bench.db", synchronous="FULL")
else:
    storage = MemoryStorage()

pp = PocketPing(storage=storage, welcome_message="Hi! How can we help?", files=LocalFileStore(tmp / "uploads"))


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
