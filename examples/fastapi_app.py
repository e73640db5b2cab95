"""FastAPI + PocketPing.  Run: uvicorn examples.fastapi_app:app"""

import logging
import os

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from pocketping import PocketPing, SQLiteStorage

log = logging.getLogger("example")
inbox: list[str] = []  # what on_message saw, shown at /inbox


def on_message(session, message):
    log.info("message from %s: %s", session.id, message.content)
    inbox.append(message.content)


pp = PocketPing(
    welcome_message="Hi! How can we help?",
    on_message=on_message,
    storage=SQLiteStorage(os.environ.get("POCKETPING_DB", "pocketping.db")),
)
app = FastAPI(lifespan=pp.lifespan)
app.mount("/pocketping", pp.asgi_app)


@app.post("/reply/{session_id}")
async def reply(session_id: str, text: str):
    message = await pp.send_message(session_id, content=text, type="operator")
    return {"id": message.id}


@app.get("/inbox")
async def show_inbox():
    return inbox


@app.get("/", response_class=HTMLResponse)
async def home():
    return '<script src="/pocketping/widget.js" data-endpoint="/pocketping"></script>'
