"""``pocketping bridge [--host H] [--port 3001] [--db pocketping-bridge.db]``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bridge",
        help="run the bridge server (bridges from POCKETPING_TELEGRAM_* / _SLACK_* / _DISCORD_* variables)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=3001)
    p.add_argument("--db", default="pocketping-bridge.db", help="SQLite file for the outbox and thread map")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bridges.remote import KEY_VARIABLE, MAKE_KEY, env_flag
    from ..cli import run_server
    from ..errors import BridgeError
    from ..storage.sqlite import SQLiteStorage
    from .app import bridges_from_env, build_bridge_server

    try:
        bridges = bridges_from_env()
    except BridgeError as exc:
        print(f"pocketping bridge: {exc}", file=sys.stderr)
        return 2
    if not bridges:
        print(
            "pocketping bridge: no bridge configured; set POCKETPING_TELEGRAM_BOT_TOKEN, "
            "POCKETPING_SLACK_BOT_TOKEN or POCKETPING_DISCORD_BOT_TOKEN (and their CHAT_ID/CHANNEL_ID)",
            file=sys.stderr,
        )
        return 2
    backend = os.environ.get("POCKETPING_BACKEND_WEBHOOK_URL") or os.environ.get("BACKEND_WEBHOOK_URL")
    api_key = os.environ.get(KEY_VARIABLE) or os.environ.get("API_KEY") or None
    if api_key is None:
        print(
            f"pocketping bridge: {KEY_VARIABLE} is not set. The bridge server accepts events only with the key "
            f"shared with your web app; make one with:\n  export {KEY_VARIABLE}=$({MAKE_KEY})\n"
            "and set the same value in the web app's environment.",
            file=sys.stderr,
        )
        return 2
    app, _pp = build_bridge_server(
        bridges,
        backend_url=backend,
        api_key=api_key,
        storage=SQLiteStorage(args.db),
        allow_unsigned=env_flag(os.environ, "POCKETPING_BRIDGE_ALLOW_UNSIGNED"),
    )
    names = ", ".join(b.name for b in bridges)
    print(f"PocketPing bridge server on http://{args.host}:{args.port} (bridges: {names})", flush=True)
    if backend is None:
        print("warning: POCKETPING_BACKEND_WEBHOOK_URL is not set; operator replies stay here", flush=True)
    if not run_server(app, args.host, args.port):
        print(f"pocketping bridge: could not listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    return 0
