"""The `pocketping` 1.12.0 package from PyPI, as its docs mount it: FastAPI with
``create_router(pp)`` under /pocketping, its CORS helper and lifespan handler, MemoryStorage
(its default). Runs from bench/.venv-pypi, never from the repository's package."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from pocketping import PocketPing
from pocketping.fastapi import add_cors_middleware, create_router, lifespan_handler

pp = PocketPing(welcome_message="Hi! How can we help?")


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with lifespan_handler(pp):
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(create_router(pp), prefix="/pocketping")
add_cors_middleware(app)


@app.post("/bench/push")
async def push(request: Request) -> dict:
    body = await request.json()
    content = body.get("content", "Hello from the operator")
    for sid in body["sessionIds"]:
        await pp.send_operator_message(sid, content)
    return {"ok": True}
