"""The console's token, its isolation from the widget's CORS, and `pocketping demo`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from ..conftest import free_port
from .conftest import TOKEN, Site


def test_console_without_token_shows_a_login_form(context: Any, site: Site) -> None:
    page = context.new_page()
    response = page.goto(site.url + "/pocketping/console")
    assert response is not None and response.status == 401
    page.get_by_label("Console token").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not this console's.")
    assert "wrong" not in page.url and "token=" not in page.url  # posted, never in the URL
    page.get_by_label("Console token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Conversations")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("Live")


def test_console_api_needs_the_token_and_has_no_cors(site: Site) -> None:
    api = site.url + "/pocketping/console/api/sessions"
    origin = {"Origin": "https://elsewhere.example"}
    with httpx.Client(timeout=10) as http:
        assert http.get(api, headers=origin).status_code == 401
        assert http.get(api, headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = http.get(api, headers={"Authorization": f"Bearer {TOKEN}", **origin})
        assert ok.status_code == 200 and ok.json()["sessions"] == []
        assert "access-control-allow-origin" not in ok.headers
        pre = http.options(api, headers={**origin, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in pre.headers
        page = http.get(site.url + f"/pocketping/console?token={TOKEN}", follow_redirects=True)
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "same-origin" and "token" not in str(page.url)
        # The widget endpoints keep their CORS.
        widget = http.get(site.url + "/pocketping/health", headers=origin)
        assert widget.headers["access-control-allow-origin"] == "https://elsewhere.example"


def test_console_is_disabled_without_a_configured_token() -> None:
    from pocketping import MemoryStorage, PocketPing

    s = Site(PocketPing(storage=MemoryStorage()))
    try:
        with httpx.Client(timeout=10) as http:
            assert http.get(s.url + "/pocketping/console?token=").status_code == 404
            assert http.get(s.url + "/pocketping/console/api/sessions").status_code == 404
    finally:
        s.stop()


def start_demo(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    port = free_port()
    exe = Path(sys.executable).with_name("pocketping")
    proc = subprocess.Popen(
        [str(exe), "demo", "--port", str(port), "--db", str(tmp_path / "demo.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: dict[str, str] = {}
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.match(r"\s*(console|demo page|token):\s+(\S+)", line):
            lines[m.group(1)] = m.group(2)
        if "Ctrl-C" in line:
            break
    return proc, lines


def wait_up(url: str) -> None:
    for _ in range(100):
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_serves_widget_and_console_and_stops_cleanly(context: Any, tmp_path: Path, sig: signal.Signals) -> None:
    proc, lines = start_demo(tmp_path)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", lines["demo page"])
        assert lines["console"] == lines["demo page"] + "pocketping/console?token=" + lines["token"]
        wait_up(lines["demo page"] + "pocketping/health")
        page = context.new_page()
        page.goto(lines["demo page"])
        page.get_by_role("button", name=re.compile("chat", re.I)).click()
        box = page.get_by_label("Your message")
        box.fill("Hello demo")
        box.press("Enter")
        console = context.new_page()
        console.goto(lines["console"])
        expect(console.get_by_role("button", name=re.compile("Conversation with .*1 unread"))).to_be_visible()
        # Open streams (the widget's WebSocket, the console's SSE) must not hold up the stop.
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        assert "PocketPing demo stopped." in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
