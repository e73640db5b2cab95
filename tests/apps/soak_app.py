"""The app the fault soak (tests/test_soak.py) kills and restarts: PostgreSQL storage and a
Discord bridge against the fake Discord of the test.

Configured by environment variables: ``PP_DSN`` (PostgreSQL), ``PP_DISCORD_API`` (the fake's
``/api/v10`` base), ``PP_DISCORD_TOKEN``, ``PP_DISCORD_CHANNEL``; ``PP_WEBHOOK_URL`` and
``PP_WEBHOOK_SECRET`` (the test's receiver); ``PP_SMTP_PORT`` (the test's SMTP server on
127.0.0.1) and ``PP_UNREAD_AFTER``.

Besides PocketPing at ``/pocketping`` it serves ``GET /test/health`` (ready once started) and
``POST /test/send`` (``pp.send_message``: an operator reply from the site's own code).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pocketping import EmailNotifier, PocketPing, PostgresStorage, WebhookEndpoint
from pocketping.bridges import DiscordBridge

bridge = DiscordBridge(
    os.environ["PP_DISCORD_TOKEN"], os.environ["PP_DISCORD_CHANNEL"], api_base=os.environ["PP_DISCORD_API"]
)
bridge.timeout, bridge.retry_base, bridge.retry_cap = 5.0, 0.05, 0.5  # retries in tenths of seconds

FAST = (0.2, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # retries within seconds, as long as the soak lasts
webhook = WebhookEndpoint(
    url=os.environ["PP_WEBHOOK_URL"], secret=os.environ["PP_WEBHOOK_SECRET"], timeout=5.0, retry_schedule=FAST
)
email = EmailNotifier(
    host="127.0.0.1",
    port=int(os.environ["PP_SMTP_PORT"]),
    sender="support@example.com",
    starttls=False,
    unread_after=float(os.environ["PP_UNREAD_AFTER"]),
    timeout=5.0,
    retry_schedule=FAST,
)

pp = PocketPing(
    storage=PostgresStorage(os.environ["PP_DSN"]),
    bridges=[bridge],
    webhooks=[webhook],
    email=email,
    public_url="http://127.0.0.1/pocketping",
    sse_heartbeat=1.0,
    # Every simulated visitor comes from 127.0.0.1: the per-address limits would refuse them.
    rate_limits=None,
)


async def health(request: Request) -> JSONResponse:
    await pp.start()
    return JSONResponse({"ready": True, "pid": os.getpid()})


async def send(request: Request) -> JSONResponse:
    body = await request.json()
    message = await pp.send_message(body["sessionId"], content=body["content"], type="operator")
    return JSONResponse({"id": message.id})


app = Starlette(
    routes=[
        Route("/test/health", health),
        Route("/test/send", send, methods=["POST"]),
        Mount("/pocketping", app=pp.asgi_app),
    ],
    lifespan=pp.lifespan,
)
