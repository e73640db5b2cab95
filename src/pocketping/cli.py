"""The ``pocketping`` command: ``pocketping demo [--port N]``."""

from __future__ import annotations

import argparse
import logging
import sys

DEMO_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PocketPing demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>PocketPing demo</h1>
<p>The PocketPing API is mounted at <code>/pocketping</code> on this site.</p>
</body></html>"""


def build_demo_app(db: str) -> object:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route

    from . import PocketPing, SQLiteStorage

    pp = PocketPing(storage=SQLiteStorage(db), welcome_message="Hi! How can we help?")

    async def home(request: object) -> HTMLResponse:
        return HTMLResponse(DEMO_PAGE)

    return Starlette(routes=[Route("/", home), Mount("/pocketping", app=pp.asgi_app)], lifespan=pp.lifespan)


def demo(args: argparse.Namespace) -> int:
    import uvicorn

    app = build_demo_app(args.db)
    base = f"http://127.0.0.1:{args.port}"
    print(f"PocketPing demo running on {base}/", flush=True)
    print(f"  site:   {base}/", flush=True)
    print(f"  api:    {base}/pocketping/health", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")  # type: ignore[arg-type]
    print("PocketPing demo stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pocketping", description="PocketPing live chat")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run a demo site on 127.0.0.1 (SQLite, no configuration)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default="pocketping-demo.db", help="SQLite file (default: %(default)s)")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
