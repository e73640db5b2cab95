"""CORS for the widget endpoints: one layer in front of the fast lane and the routes.

The widget runs on the site's pages, often on another origin than the API, with credentials;
so an allowed ``Origin`` is reflected with ``Access-Control-Allow-Credentials: true`` and the
version headers are exposed. Preflights are answered here. The console is not behind this
layer: no other origin may read it.

Starlette's ``CORSMiddleware`` gives the same answers, but wraps every response in header
objects (about 12 µs per request, a third of a visitor message's whole cost); this layer looks
at the raw header list once and appends ready-made byte pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: Request headers a browser may always send, plus ours.
HEADERS = ("Accept", "Accept-Language", "Content-Language", "Content-Type", "X-PocketPing-Version")
PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, " + (
    b"Access-Control-Request-Private-Network"
)


class Cors:
    """``allowed_origins``: ``"*"`` (any origin, reflected) or the origins allowed."""

    def __init__(
        self, app: ASGIApp, allowed_origins: Sequence[str] | str, *, expose: Sequence[str] = (), max_age: int = 86400
    ) -> None:
        self.app = app
        self.any_origin = allowed_origins == "*"
        origins = [allowed_origins] if isinstance(allowed_origins, str) else list(allowed_origins)
        self.origins = frozenset(o.encode("latin-1") for o in origins)
        self.allowed_headers = frozenset(h.lower() for h in HEADERS)
        self._expose = ", ".join(expose).encode("latin-1")
        self._preflight = [
            (b"vary", PREFLIGHT_VARY),
            (b"access-control-allow-methods", ", ".join(METHODS).encode()),
            (b"access-control-max-age", str(max_age).encode()),
            (b"access-control-allow-headers", ", ".join(HEADERS).encode()),
            (b"access-control-allow-credentials", b"true"),
        ]

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin in self.origins

    def response_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """What an answer to a request from ``origin`` carries."""
        if origin is None or not self.allows(origin):
            return [(b"vary", b"Origin")]
        headers = [(b"access-control-allow-origin", origin), (b"access-control-allow-credentials", b"true")]
        if self._expose:
            headers.append((b"access-control-expose-headers", self._expose))
        headers.append((b"vary", b"Origin"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = method = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                method = value
        if origin is not None and method is not None and scope["method"] == "OPTIONS":
            await self._answer_preflight(scope, origin, method, send)
            return
        extra = self.response_headers(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _answer_preflight(self, scope: Scope, origin: bytes, method: bytes, send: Send) -> None:
        requested_headers = private_network = None
        for name, value in scope["headers"]:
            if name == b"access-control-request-headers":
                requested_headers = value.decode("latin-1")
            elif name == b"access-control-request-private-network":
                private_network = value
        headers = list(self._preflight)
        failures = []
        if self.allows(origin):
            headers.append((b"access-control-allow-origin", origin))
        else:
            failures.append("origin")
        if method.decode("latin-1") not in METHODS:
            failures.append("method")
        if requested_headers is not None and any(
            h.strip().lower() not in self.allowed_headers for h in requested_headers.split(",")
        ):
            failures.append("headers")
        if private_network is not None:
            failures.append("private-network")
        body = b"Disallowed CORS " + ", ".join(failures).encode() if failures else b"OK"
        headers += [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 400 if failures else 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
