"""The app the scaling tests run in two uvicorn processes against one PostgreSQL database.

Configured by environment variables:

* ``PP_DSN``: PostgreSQL DSN for ``PostgresStorage`` (required)
* ``PP_BROKER``: ``redis`` (with ``PP_REDIS_URL``) or ``postgres`` (LISTEN/NOTIFY on ``PP_DSN``)
* ``PP_EVENTS_FILE``: every ``on_event`` call appends a line ``<pid> <session> <name>`` here
* ``PP_CHANNEL``: the broker's channel (default ``pocketping``); it also keeps the rate-limit
  counts of different pairs apart in one Redis
* ``PP_SESSIONS_PER_IP``: ``RateLimits(sessions_per_ip=...)`` (default: the default limits)

Besides PocketPing at ``/pocketping`` it serves ``GET /test/health`` (ready once the broker is
connected) and ``POST /test/send`` (``pp.send_message`` in this process, as an operator reply
sent through this worker would be).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pocketping import PocketPing, PostgresBroker, PostgresStorage, RateLimits, RedisBroker
from pocketping.realtime.brokers import QueueBroker

DSN = os.environ["PP_DSN"]
KIND = os.environ.get("PP_BROKER", "redis")
EVENTS_FILE = os.environ.get("PP_EVENTS_FILE")

CHANNEL = os.environ.get("PP_CHANNEL", "pocketping")
broker: QueueBroker = (
    RedisBroker(os.environ["PP_REDIS_URL"], channel=CHANNEL)
    if KIND == "redis"
    else PostgresBroker(DSN, channel=CHANNEL)
)
limits = RateLimits(sessions_per_ip=os.environ.get("PP_SESSIONS_PER_IP", "20/minute"))


def record_event(session: Any, event: Any) -> None:
    if EVENTS_FILE:
        with open(EVENTS_FILE, "a") as f:
            f.write(f"{os.getpid()} {session.id} {event.name}\n")


pp = PocketPing(
    storage=PostgresStorage(DSN, max_size=int(os.environ.get("PP_POOL", "10"))),
    broker=broker,
    on_event=record_event,
    sse_heartbeat=1.0,
    rate_limits=limits,
)


async def health(request: Request) -> JSONResponse:
    await pp.start()
    return JSONResponse(
        {"ready": broker.connected, "pid": os.getpid(), "reconnects": broker.reconnects, "broker": KIND}
    )


async def send(request: Request) -> JSONResponse:
    body = await request.json()
    message = await pp.send_message(body["sessionId"], content=body["content"], type="operator")
    return JSONResponse({"id": message.id, "cursor": message.cursor.isoformat()})


app = Starlette(
    routes=[
        Route("/test/health", health),
        Route("/test/send", send, methods=["POST"]),
        Mount("/pocketping", app=pp.asgi_app),
    ],
    lifespan=pp.lifespan,
)
