"""No secret reaches a log line, at any level: bot tokens in httpx's request lines, the console
token in an access log's query string, secrets inside tracebacks."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from pocketping import MemoryStorage, PocketPing
from pocketping.bridges import TelegramBridge

from .fakes.harness import Visitor, fast
from .fakes.telegram import CHAT_ID, FakeTelegram

WEBHOOK_SECRET = "webhook-secret-0123456789"
CONSOLE_TOKEN = "console-token-0123456789"


def test_a_telegram_round_trip_logs_no_secret_at_debug(
    tg: FakeTelegram, serve: Callable[[PocketPing], str], caplog: pytest.LogCaptureFixture
) -> None:
    bridge = TelegramBridge(tg.token, CHAT_ID, webhook_secret=WEBHOOK_SECRET, api_base=tg.url)
    fast(bridge)
    pp = PocketPing(storage=MemoryStorage(), bridges=[bridge], console_token=CONSOLE_TOKEN)
    with caplog.at_level(logging.DEBUG):
        base = serve(pp)
        visitor = Visitor(base)
        visitor.say("Hello")
        tg.wait_for(lambda: [b for b in tg.sent("sendMessage") if b["text"].endswith("Hello")])
        visitor.close()
    lines = caplog.text
    assert "HTTP Request: POST" in lines  # httpx did log its request lines ...
    assert "/bot***/" in lines  # ... with the token masked
    for secret in (tg.token, WEBHOOK_SECRET, CONSOLE_TOKEN):
        assert secret not in lines
        assert all(secret not in str(r.args) for r in caplog.records)


def test_access_lines_and_tracebacks_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    PocketPing(storage=MemoryStorage(), console_token=CONSOLE_TOKEN)
    access = logging.getLogger("uvicorn.access")
    failing = logging.getLogger("pocketping.bridges")
    # uvicorn's own logging setup stops its access records from propagating: listen directly.
    access.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/console?token={CONSOLE_TOKEN}", "1.1", 200)
        try:
            raise RuntimeError(f"could not reach https://example.invalid/?token={CONSOLE_TOKEN}")
        except RuntimeError:
            failing.exception("request failed")
    access.removeHandler(caplog.handler)
    assert "/console?token=***" in caplog.text
    assert CONSOLE_TOKEN not in caplog.text
