"""The Discord Gateway client against a fake Gateway on 127.0.0.1: identify, heartbeats,
resume after RECONNECT or a zombied connection, re-identify after INVALID_SESSION, and no
reconnect loop after an authentication failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from pocketping.bridges.gateway import GatewayClient

from .fakes.discord import FakeGateway

pytestmark = pytest.mark.anyio


@pytest.fixture
def gw() -> Iterator[FakeGateway]:
    fake = FakeGateway("tok", heartbeat_ms=100)
    fake.start()
    yield fake
    fake.stop()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def running(
    gw: FakeGateway, token: str = "tok"
) -> tuple[GatewayClient, list[tuple[str, dict[str, Any]]], asyncio.Task[None]]:
    got: list[tuple[str, dict[str, Any]]] = []

    async def on_dispatch(kind: str, d: dict[str, Any]) -> None:
        got.append((kind, d))

    async def url() -> str:
        return gw.url

    client = GatewayClient(token, url, on_dispatch)
    client.max_backoff = 0.2
    return client, got, asyncio.get_running_loop().create_task(client.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_identify_heartbeat_and_dispatch(gw: FakeGateway) -> None:
    client, got, task = await running(gw)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        assert client.session_id == "gw-session-1" and client.user_id
        await until(lambda: len(gw.received(1)) >= 2)  # heartbeats, acknowledged
        await asyncio.to_thread(gw.dispatch, "MESSAGE_CREATE", {"id": "1", "content": "hi"})
        await until(lambda: got)
        assert got == [("MESSAGE_CREATE", {"id": "1", "content": "hi"})]
        assert gw.received(2)[0]["d"]["intents"] == (1 << 0) | (1 << 9) | (1 << 15)
    finally:
        await stop(task)


async def test_zombied_connection_resumes_and_replays(gw: FakeGateway) -> None:
    client, got, task = await running(gw)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        gw.ack_heartbeats = False
        await until(lambda: gw.received(6), timeout=5)  # closed the silent connection and resumed
        gw.ack_heartbeats = True
        resume = gw.received(6)[0]["d"]
        assert resume == {"token": "tok", "session_id": "gw-session-1", "seq": 1}  # READY was event 1
        await until(lambda: len(gw.clients) == 1)
        await asyncio.to_thread(gw.dispatch, "MESSAGE_CREATE", {"id": "2", "content": "after resume"})
        await until(lambda: got)
        assert got[-1][1]["content"] == "after resume"
        assert len(gw.received(2)) == 1  # never re-identified
    finally:
        await stop(task)


async def test_invalid_session_identifies_again(gw: FakeGateway) -> None:
    client, _got, task = await running(gw)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        await until(lambda: len(gw.clients) == 1)
        await asyncio.to_thread(gw.invalid_session, False)
        await until(lambda: len(gw.received(2)) == 2, timeout=5)
        assert gw.received(6) == []
    finally:
        await stop(task)


async def test_authentication_failure_stops_reconnecting(gw: FakeGateway) -> None:
    _client, _got, task = await running(gw, token="wrong")
    await asyncio.wait_for(task, 5)  # returns by itself instead of hammering the Gateway
    assert len(gw.received(2)) == 1
