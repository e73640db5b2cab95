"""The ``pocketping`` command: ``pocketping demo [--port N]``."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
from collections.abc import Callable
from typing import Any

DEMO_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PocketPing demo shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:720px;margin:40px auto;padding:0 16px;color:#222}
code{background:#f1f1f4;padding:1px 4px;border-radius:4px}</style></head>
<body><h1>PocketPing demo shop</h1>
<p>This page embeds the PocketPing widget with one tag:</p>
<pre><code>&lt;script src="/pocketping/widget.js" data-endpoint="/pocketping"&gt;&lt;/script&gt;</code></pre>
<p>Open the chat bubble (bottom right) and write something. Answer it from the
<strong>operator console</strong> (its address, with its token, is printed in the terminal),
or from Python: <code>await pp.send_message(session_id, content="Hi!")</code>.</p>
<script src="/pocketping/widget.js" data-endpoint="/pocketping" data-title="Demo shop"
 data-operator-name="Demo team" data-welcome-message="Hi! How can we help?"></script>
</body></html>"""


def build_demo_app(db: str, token: str) -> tuple[Any, Any]:
    """The demo site (page at ``/``, PocketPing at ``/pocketping``) and its PocketPing."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route

    from . import PocketPing, SQLiteStorage

    pp = PocketPing(
        storage=SQLiteStorage(db),
        welcome_message="Hi! How can we help?",
        operator_name="Demo team",
        console_token=token,
    )

    async def home(request: object) -> HTMLResponse:
        return HTMLResponse(DEMO_PAGE)

    app = Starlette(routes=[Route("/", home), Mount("/pocketping", app=pp.asgi_app)], lifespan=pp.lifespan)
    return app, pp


def run_server(app: Any, host: str, port: int, on_exit: Callable[[], None] | None = None) -> bool:
    """Serve ``app`` with uvicorn until Ctrl-C or SIGTERM; False if it could not listen.
    ``on_exit`` runs when the signal arrives, before uvicorn's graceful shutdown."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if on_exit is not None:
                on_exit()
            super().handle_exit(sig, frame)

    # uvicorn re-raises the signal it caught once it has shut down; these handlers make that a
    # no-op, so Ctrl-C and SIGTERM end the process with exit code 0.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5))
    try:
        server.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return bool(server.started)


def demo(args: argparse.Namespace) -> int:
    token = args.token or secrets.token_urlsafe(18)
    app, pp = build_demo_app(args.db, token)
    base = f"http://127.0.0.1:{args.port}"

    def end_streams() -> None:
        # End open SSE/WebSocket streams at once, so shutdown does not wait on them.
        pp.hub.close_all()

    print(f"PocketPing demo running on {base}/ (data in {args.db})", flush=True)
    print(f"  demo page:  {base}/", flush=True)
    print(f"  console:    {base}/pocketping/console?token={token}", flush=True)
    print(f"  widget.js:  {base}/pocketping/widget.js", flush=True)
    print(f"  health:     {base}/pocketping/health", flush=True)
    print(f"token: {token}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    if not run_server(app, "127.0.0.1", args.port, on_exit=end_streams):
        print(f"PocketPing demo could not start on port {args.port} (in use? try --port N)", file=sys.stderr)
        return 1
    print("PocketPing demo stopped.", flush=True)
    return 0


def load_app(spec: str) -> Any:
    """The ``PocketPing`` named by ``module:attribute`` (the current directory is importable)."""
    import importlib

    from . import PocketPing

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"--app must be module:attribute, such as myapp.chat:pp, not {spec!r}")
    sys.path.insert(0, ".")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"--app: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not isinstance(found, PocketPing):
        raise SystemExit(f"--app: {spec} is not a PocketPing instance")
    return found


def stats(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .errors import PocketPingError

    pp = load_app(args.app)

    async def gather() -> Any:
        await pp.storage.open()
        try:
            return await pp.get_stats(since=args.since, until=args.until)
        finally:
            await pp.storage.close()

    try:
        found = asyncio.run(gather())
    except PocketPingError as exc:
        print(f"pocketping stats: {exc}", file=sys.stderr)
        return 2
    figures = found.to_dict()
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for key, value in figures.items():
        if isinstance(value, float):
            value = round(value, 3)
        print(f"{key:>20}  {value}")
    return 0


def read_password(args: argparse.Namespace) -> str:
    """The new password: one line of standard input with ``--password-stdin``, else typed twice
    without echo."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("pocketping operator: the two passwords differ")
    return first


def operator(args: argparse.Namespace) -> int:
    import asyncio

    from .errors import PocketPingError

    pp = load_app(args.app)
    password = read_password(args) if args.action in ("add", "passwd") else ""

    async def change() -> str:
        await pp.storage.open()
        try:
            if args.action == "add":
                made = await pp.operators.add(args.name, password, args.role)
                return f"added {made.name} ({made.role})"
            if args.action == "remove":
                await pp.operators.remove(args.name)
                return f"removed {args.name}; their sign-ins have ended"
            await pp.operators.set_password(args.name, password)
            return f"new password for {args.name}; their sign-ins have ended"
        finally:
            await pp.storage.close()

    try:
        print(asyncio.run(change()))
    except PocketPingError as exc:
        print(f"pocketping operator: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pocketping", description="PocketPing live chat")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run a demo site on 127.0.0.1 (SQLite, no configuration)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default="pocketping-demo.db", help="SQLite file (default: %(default)s)")
    p.add_argument("--token", default=None, help="console token (default: a new random one)")
    p.set_defaults(func=demo)
    p = sub.add_parser("stats", help="conversation statistics of an app's storage")
    p.add_argument("--app", required=True, help="the PocketPing instance, as module:attribute")
    p.add_argument("--since", default=None, help="ISO-8601 start (default: 30 days before --until)")
    p.add_argument("--until", default=None, help="ISO-8601 end (default: now)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=stats)
    p = sub.add_parser("operator", help="add or remove an operator account, or set its password")
    p.add_argument("action", choices=["add", "remove", "passwd"])
    p.add_argument("name", help="the operator's name (shown to visitors on their replies)")
    p.add_argument("--app", required=True, help="the PocketPing instance, as module:attribute")
    p.add_argument("--role", choices=["agent", "admin"], default="agent", help="with add (default: %(default)s)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=operator)
    from .bridge_server.cli import add_parser as add_bridge_parser

    add_bridge_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
