"""Starlette + PocketPing.  Run: uvicorn examples.starlette_app:app"""

import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route

from pocketping import PocketPing, SQLiteStorage

log = logging.getLogger("example")
inbox: list[str] = []

pp = PocketPing(
    welcome_message="Hi! How can we help?",
    storage=SQLiteStorage(os.environ.get("POCKETPING_DB", "pocketping.db")),
)


@pp.on_message
async def remember(session, message):
    log.info("message from %s: %s", session.id, message.content)
    inbox.append(message.content)


async def reply(request: Request):
    message = await pp.send_message(request.path_params["session_id"], content=request.query_params["text"])
    return JSONResponse({"id": message.id})


async def show_inbox(request: Request):
    return JSONResponse(inbox)


async def home(request: Request):
    return HTMLResponse('<script src="/pocketping/widget.js" data-endpoint="/pocketping"></script>')


app = Starlette(
    routes=[
        Route("/", home),
        Route("/reply/{session_id}", reply, methods=["POST"]),
        Route("/inbox", show_inbox),
        Mount("/pocketping", app=pp.asgi_app),
    ],
    lifespan=pp.lifespan,
)
