"""Each example app, under a real server (uvicorn for ASGI, gunicorn for WSGI): the visitor
writes, on_message sees it, an operator reply sent through the app reaches the visitor live."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from .conftest import SSEReader, connect, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

SERVERS = {
    "fastapi": ("asgi", [str(BIN / "uvicorn"), "examples.fastapi_app:app"]),
    "starlette": ("asgi", [str(BIN / "uvicorn"), "examples.starlette_app:app"]),
    "django-asgi": ("asgi", [str(BIN / "uvicorn"), "examples.django_app:application"]),
    "flask": ("wsgi", [str(BIN / "gunicorn"), "-k", "gthread", "--threads", "16", "examples.flask_app:app"]),
    "django-wsgi": (
        "wsgi",
        [str(BIN / "gunicorn"), "-k", "gthread", "--threads", "16", "examples.django_app:wsgi_application"],
    ),
}


@pytest.fixture(params=list(SERVERS))
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    kind, cmd = SERVERS[request.param]
    port = free_port()
    bind = ["--host", "127.0.0.1", "--port", str(port)] if kind == "asgi" else ["--bind", f"127.0.0.1:{port}"]
    env = {**os.environ, "POCKETPING_DB": str(tmp_path / "example.db")}
    log_path = tmp_path / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([*cmd, *bind], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/pocketping/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{request.param} did not start: {log_path.read_text()}")
            time.sleep(0.1)
        yield kind, url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_example_round_trip(example: tuple[str, str]) -> None:
    kind, url = example
    with httpx.Client(base_url=url + "/pocketping", timeout=10) as http:
        sid = connect(http)["sessionId"]
        ws_url = url.replace("http://", "ws://") + f"/pocketping/stream?sessionId={sid}"
        if kind == "asgi":
            with ws_connect(ws_url) as ws:
                http.post("/message", json={"sessionId": sid, "content": "hello from the widget"})
                r = httpx.post(f"{url}/reply/{sid}", params={"text": "hello from the operator"})
                assert r.status_code == 200, r.text
                deadline = time.monotonic() + 5
                while True:
                    frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                    if frame["type"] == "message" and frame["data"]["sender"] == "operator":
                        break
                assert frame["data"]["content"] == "hello from the operator"
        else:
            # WSGI cannot upgrade: the handshake is refused at once, so the widget falls back to SSE.
            with pytest.raises(InvalidStatus):
                ws_connect(ws_url, open_timeout=5)
            sse = SSEReader(f"{url}/pocketping/stream?sessionId={sid}")
            try:
                http.post("/message", json={"sessionId": sid, "content": "hello from the widget"})
                r = httpx.post(f"{url}/reply/{sid}", params={"text": "hello from the operator"})
                assert r.status_code == 200, r.text
                while True:
                    data = sse.next(timeout=5, type="message")["json"]["data"]
                    if data["sender"] == "operator":
                        break
                assert data["content"] == "hello from the operator"
            finally:
                sse.close()
        polled = http.get("/messages", params={"sessionId": sid}).json()["messages"]
        assert [(m["sender"], m["content"]) for m in polled] == [
            ("visitor", "hello from the widget"),
            ("operator", "hello from the operator"),
        ]
    deadline = time.monotonic() + 5
    while httpx.get(url + "/inbox").json() != ["hello from the widget"]:
        assert time.monotonic() < deadline, "on_message was not called"
        time.sleep(0.05)
