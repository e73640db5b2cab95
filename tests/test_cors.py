"""web/cors.py answers like Starlette's CORSMiddleware configured the same way (the layer it
replaced on the widget endpoints), request by request."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pocketping.web.cors import HEADERS, METHODS, Cors
from pocketping.web.fast import VERSION_HEADERS


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True}, headers={"X-PocketPing-Version-Status": "ok"})


INNER = Starlette(routes=[Route("/x", hello, methods=["GET", "POST"])])
COMPARED = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
    "access-control-expose-headers",
)

REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("GET", {}),
    ("POST", {"Origin": "https://shop.example"}),
    ("GET", {"Origin": "https://evil.example"}),
    ("OPTIONS", {"Origin": "https://shop.example", "Access-Control-Request-Method": "PATCH"}),
    (
        "OPTIONS",
        {
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-pocketping-version",
        },
    ),
    ("OPTIONS", {"Origin": "https://shop.example", "Access-Control-Request-Method": "TRACE"}),
    (
        "OPTIONS",
        {
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-evil",
        },
    ),
    ("OPTIONS", {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}),
    (
        "OPTIONS",
        {
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Private-Network": "true",
        },
    ),
]


def starlette_cors(origins: Any) -> Any:
    extra: dict[str, Any] = {"allow_origin_regex": ".*"} if origins == "*" else {"allow_origins": origins}
    return CORSMiddleware(
        INNER,
        allow_credentials=True,
        allow_methods=list(METHODS),
        allow_headers=list(HEADERS),
        expose_headers=VERSION_HEADERS,
        max_age=86400,
        **extra,
    )


def answer(app: Any, method: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str | None], set[str]]:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.request(method, "/x", headers=headers)

    import asyncio

    r = asyncio.run(go())
    vary = {v.strip() for value in r.headers.get_list("vary") for v in value.split(",")}
    return r.status_code, r.text, {h: r.headers.get(h) for h in COMPARED}, vary


@pytest.mark.parametrize("origins", ["*", ["https://shop.example"]])
@pytest.mark.parametrize(("method", "headers"), REQUESTS)
def test_same_answers_as_starlettes_cors_middleware(origins: Any, method: str, headers: dict[str, str]) -> None:
    ours = answer(Cors(INNER, origins, expose=VERSION_HEADERS), method, headers)
    theirs = answer(starlette_cors(origins), method, headers)
    status, body, compared, vary = theirs
    if "Origin" in headers and method != "OPTIONS" and compared["access-control-allow-origin"] is None:
        # Starlette also sends the credentials and expose headers to an origin it refuses;
        # without Access-Control-Allow-Origin they mean nothing, so we leave them out.
        compared = {**compared, "access-control-allow-credentials": None, "access-control-expose-headers": None}
    assert ours == (status, body, compared, vary)
