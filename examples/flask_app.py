"""Flask + PocketPing (WSGI: SSE and polling).  Run: gunicorn -k gthread --threads 32 examples.flask_app:app"""

import logging
import os

from flask import Flask, jsonify, request

from pocketping import PocketPing, SQLiteStorage

log = logging.getLogger("example")
inbox: list[str] = []

pp = PocketPing(
    welcome_message="Hi! How can we help?",
    on_message=lambda session, message: inbox.append(message.content),
    storage=SQLiteStorage(os.environ.get("POCKETPING_DB", "pocketping.db")),
)
app = Flask(__name__)
app.wsgi_app = pp.wrap_wsgi(app.wsgi_app)  # serves /pocketping/*


@app.post("/reply/<session_id>")
def reply(session_id):
    message = pp.sync.send_message(session_id, content=request.args["text"], type="operator")
    return jsonify(id=message.id)


@app.get("/inbox")
def show_inbox():
    return jsonify(inbox)


@app.get("/")
def home():
    return '<script src="/pocketping/widget.js" data-endpoint="/pocketping"></script>'
