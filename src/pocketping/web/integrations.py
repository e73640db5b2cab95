"""Serve PocketPing under a path of any ASGI or WSGI app (Django, Flask, …).

``pp.wrap(app)`` and ``pp.wrap_wsgi(app)`` return an app that sends ``/pocketping/*`` to
PocketPing and everything else to ``app``. The ASGI wrapper also runs PocketPing's startup
and shutdown inside the host's lifespan (and passes the lifespan on to the host).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ..core import PocketPing

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _prefix(path: str) -> str:
    path = "/" + path.strip("/")
    if path == "/":
        raise ValueError("mount PocketPing under a path such as /pocketping, not at the root")
    return path


class ASGIWrapper:
    def __init__(self, pp: PocketPing, app: ASGIApp, path: str) -> None:
        self.pp, self.app, self.prefix = pp, app, _prefix(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self.prefix or path.startswith(self.prefix + "/"):
            child = dict(scope, root_path=scope.get("root_path", "") + self.prefix)
            await self.pp.asgi_app(child, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start PocketPing, then let the host app run its own lifespan (if it has one)."""
        started = False

        async def host_receive() -> Message:
            nonlocal started
            message = await receive()
            if message["type"] == "lifespan.startup" and not started:
                await self.pp.start()
                started = True
            elif message["type"] == "lifespan.shutdown":
                await self.pp.stop()
            return message

        try:
            await self.app(scope, host_receive, send)
        except Exception:
            # The host has no lifespan support (e.g. Django): answer the protocol ourselves.
            while True:
                message = await host_receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return


def wrap_wsgi(pp: PocketPing, app: WSGIApp, path: str) -> WSGIApp:
    prefix = _prefix(path)

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path_info: str = environ.get("PATH_INFO", "")
        if path_info == prefix or path_info.startswith(prefix + "/"):
            environ = dict(
                environ,
                SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + prefix,
                PATH_INFO=path_info[len(prefix) :] or "/",
            )
            return pp.wsgi_app(environ, start_response)  # type: ignore[no-any-return]
        return app(environ, start_response)

    return dispatch
