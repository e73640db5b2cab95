"""Our widget and the operator console side by side in real Chromium, against a real server."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from .conftest import ROOT, Site

XSS = "<img src=x onerror=alert(1)>"
LAUNCHER = re.compile(r"chat|support|message|help", re.I)


def open_widget(context: Any, site: Site) -> Any:
    page = context.new_page()
    page.goto(site.url + "/")
    launcher = page.get_by_role("button", name=LAUNCHER)
    expect(launcher).to_be_visible()
    launcher.click()
    box = page.get_by_placeholder("Type a message…")
    expect(box).to_be_enabled()
    page.wait_for_function("PocketPing.transport === 'ws'")
    return page


def say(page: Any, text: str) -> None:
    box = page.get_by_label("Your message")
    box.fill(text)
    box.press("Enter")


def stored(page: Any) -> None:
    """Wait until every message the visitor wrote has been accepted by the server."""
    page.wait_for_function(
        "!document.getElementById('pocketping-root').shadowRoot.querySelector('li[data-id^=\"temp-\"]')"
    )


def bubbles(page: Any) -> Any:
    return page.locator("#pocketping-root li.pp-m[data-id]")


def open_console(operator_context: Any, site: Site) -> Any:
    page = operator_context.new_page()
    page.goto(site.console_url)
    expect(page.locator("#conn")).to_have_text("Live")
    return page


def reply(console: Any, text: str) -> None:
    console.get_by_label("Reply").fill(text)
    console.get_by_role("button", name="Send", exact=True).click()


def test_visitor_writes_operator_replies_in_real_time(context: Any, operator_context: Any, site: Site) -> None:
    visitor = open_widget(context, site)
    console = open_console(operator_context, site)
    expect(visitor.locator("#pocketping-root h2")).to_have_text("Test shop")
    assert visitor.evaluate("PocketPing.transport") == "ws"

    say(visitor, "Hi, do you ship to Lyon?")
    expect(bubbles(visitor)).to_have_count(1)
    entry = console.get_by_role("button", name=re.compile(r"Conversation with .*1 unread"))
    expect(entry).to_be_visible()
    entry.click()
    expect(console.locator("#messages li > span")).to_have_text(["Hi, do you ship to Lyon?"])

    # Operator typing shows in the widget; visitor typing shows in the console.
    console.get_by_label("Reply").press_sequentially("Ye", delay=20)
    expect(visitor.get_by_text("Ann is typing…")).to_be_visible()
    visitor.wait_for_timeout(2100)  # visitor typing is forwarded at most every 2 s
    visitor.get_by_label("Your message").press_sequentially("ok", delay=20)
    expect(console.locator("#typing")).to_contain_text("is typing…")
    visitor.get_by_label("Your message").fill("")

    reply(console, "Yes, in 2 days.")
    expect(bubbles(visitor).last.locator(".pp-t")).to_have_text("Yes, in 2 days.")
    expect(visitor.get_by_text("Ann is typing…")).to_be_hidden()
    # The console read the visitor's message: the widget shows the receipt.
    expect(bubbles(visitor).first.locator("small")).to_contain_text("read")

    # Closed widget: a new reply raises the unread count on the launcher.
    visitor.get_by_role("button", name="Close chat", exact=True).click()
    reply(console, "Anything else?")
    expect(visitor.get_by_role("button", name=re.compile(r"Open chat .*1 unread message"))).to_be_visible()
    visitor.get_by_role("button", name=LAUNCHER).click()
    expect(visitor.get_by_role("button", name=re.compile(r"unread"))).to_have_count(0)

    sid = visitor.evaluate("PocketPing.sessionId")
    stored = site.messages(sid)
    assert [(m.sender, m.content) for m in stored] == [
        ("visitor", "Hi, do you ship to Lyon?"),
        ("operator", "Yes, in 2 days."),
        ("operator", "Anything else?"),
    ]
    expect(bubbles(visitor)).to_have_count(3)  # no duplicates from the echo or the replay
    shoot(visitor, console)


def shoot(visitor: Any, console: Any) -> None:
    """Screenshots of the widget and the console; copied to docs/ with POCKETPING_SCREENSHOTS=1."""
    out = Path(os.environ.get("PYTEST_TMP_SHOTS", "/tmp"))
    widget_png, console_png = out / "pp-widget.png", out / "pp-console.png"
    visitor.set_viewport_size({"width": 900, "height": 700})
    visitor.screenshot(path=str(widget_png))
    console.screenshot(path=str(console_png))
    for png in (widget_png, console_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("POCKETPING_SCREENSHOTS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(widget_png, ROOT / "docs" / "widget.png")
        shutil.copy(console_png, ROOT / "docs" / "console.png")


def test_reload_keeps_history_and_session(context: Any, site: Site) -> None:
    visitor = open_widget(context, site)
    say(visitor, "First question")
    expect(bubbles(visitor)).to_have_count(1)
    stored(visitor)  # the answer below must come after it
    sid = visitor.evaluate("PocketPing.sessionId")
    site.run(site.pp.send_message(sid, content="First answer"))
    expect(bubbles(visitor)).to_have_count(2)

    visitor.reload()
    expect(bubbles(visitor).locator(".pp-t")).to_have_text(["First question", "First answer"])
    assert visitor.evaluate("PocketPing.sessionId") == sid
    assert visitor.evaluate("localStorage.getItem('pocketping_session_id')") == sid
    assert re.fullmatch(r"[0-9a-z]+-[0-9a-z]{1,9}", visitor.evaluate("localStorage.getItem('pocketping_visitor_id')"))
    # The chat stayed open across the reload and still works.
    say(visitor, "Second question")
    expect(bubbles(visitor)).to_have_count(3)
    assert [m.content for m in site.messages(sid)] == ["First question", "First answer", "Second question"]


def block_websocket(page: Any) -> None:
    # The handshake never reaches the server and the socket closes at once (as behind a proxy
    # that refuses upgrades).
    page.route_web_socket(re.compile(r"/pocketping/stream"), lambda ws: ws.close())


def test_websocket_blocked_falls_back_to_sse(context: Any, site: Site) -> None:
    page = context.new_page()
    block_websocket(page)
    page.goto(site.url + "/")
    page.get_by_role("button", name=LAUNCHER).click()
    page.wait_for_function("PocketPing.transport === 'sse'")
    say(page, "Over SSE")
    expect(bubbles(page)).to_have_count(1)
    sid = page.evaluate("PocketPing.sessionId")
    site.run(site.pp.send_message(sid, content="Reply over SSE"))
    expect(bubbles(page).last.locator(".pp-t")).to_have_text("Reply over SSE")
    assert page.evaluate("PocketPing.transport") == "sse"


def test_websocket_and_sse_blocked_fall_back_to_polling(context: Any, site: Site) -> None:
    page = context.new_page()
    block_websocket(page)
    polls: list[str] = []
    page.route(re.compile(r"/pocketping/stream\?"), lambda route: route.abort())
    page.on("request", lambda r: polls.append(r.url) if "/pocketping/messages?" in r.url else None)
    page.goto(site.url + "/")
    page.get_by_role("button", name=LAUNCHER).click()
    page.wait_for_function("PocketPing.transport === 'poll'")
    say(page, "Over polling")
    expect(bubbles(page)).to_have_count(1)
    sid = page.evaluate("PocketPing.sessionId")
    site.run(site.pp.send_message(sid, content="Reply over polling"))
    expect(bubbles(page).last.locator(".pp-t")).to_have_text("Reply over polling")
    expect(bubbles(page)).to_have_count(2)
    for _ in range(50):  # the poll after the one that brought the messages carries their cursor
        if any("after=" in u for u in polls):
            break
        page.wait_for_timeout(100)
    assert polls and all("sessionId=" + sid in u for u in polls)
    assert any("after=" in u for u in polls)  # the ISO cursor


def test_markup_in_messages_is_shown_as_text_and_runs_nothing(context: Any, operator_context: Any, site: Site) -> None:
    dialogs: list[str] = []
    visitor = open_widget(context, site)
    console = open_console(operator_context, site)
    for page in (visitor, console):
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    say(visitor, XSS)
    expect(bubbles(visitor).first.locator(".pp-t")).to_have_text(XSS)
    console.get_by_role("button", name=re.compile("Conversation with")).click()
    expect(console.locator("#messages li span").first).to_have_text(XSS)
    reply(console, "Echo: " + XSS)
    expect(bubbles(visitor).last.locator(".pp-t")).to_have_text("Echo: " + XSS)
    expect(console.get_by_role("button", name=re.compile("Conversation with")).first).to_contain_text(XSS)
    visitor.wait_for_timeout(500)  # time for a broken image's onerror to fire, were there one
    assert visitor.locator("#pocketping-root img").count() == 0
    assert console.locator("img").count() == 0
    assert dialogs == []


def test_custom_events_both_ways_and_session_closed(context: Any, operator_context: Any, site: Site) -> None:
    received: list[tuple[str, dict[str, Any]]] = []
    site.pp.on_event(lambda session, event: received.append((event.name, dict(event.data))))
    visitor = open_widget(context, site)
    visitor.evaluate("window.got = []; PocketPing.on('event:show_offer', (data) => window.got.push(data)); null")
    say(visitor, "hello")
    expect(bubbles(visitor)).to_have_count(1)
    sid = visitor.evaluate("PocketPing.sessionId")

    site.run(site.pp.emit_event(sid, "show_offer", discount=20))
    visitor.wait_for_function("window.got.length === 1")
    assert visitor.evaluate("window.got") == [{"discount": 20}]

    assert visitor.evaluate("PocketPing.trigger('clicked_pricing', {plan: 'pro'})") is True
    for _ in range(50):
        if received:
            break
        visitor.wait_for_timeout(100)
    assert received == [("clicked_pricing", {"plan": "pro"})]

    console = open_console(operator_context, site)
    console.get_by_role("button", name=re.compile("Conversation with")).click()
    console.get_by_role("button", name="Close conversation").click()
    expect(visitor.get_by_role("status")).to_contain_text("conversation has been closed")
    assert site.run(site.pp.get_session(sid)).status == "closed"


def test_accessibility_and_mobile_layout(browser: Any, site: Site) -> None:
    ctx = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        page.goto(site.url + "/")
        assert page.evaluate("document.getElementById('pocketping-root').shadowRoot !== null")  # open, not closed
        expect(page.get_by_role("button", name=LAUNCHER)).to_have_count(1)
        launcher = page.locator("#pocketping-root button[aria-controls]")
        expect(launcher).to_have_accessible_name(LAUNCHER)
        expect(launcher).to_have_attribute("aria-expanded", "false")
        launcher.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="Test shop")
        expect(dialog).to_be_visible()
        expect(launcher).to_have_attribute("aria-expanded", "true")
        box = dialog.bounding_box()
        assert box is not None and box["width"] == 375 and box["height"] == 667  # full screen on a phone
        expect(page.get_by_label("Your message")).to_be_focused()
        expect(page.get_by_role("log", name="Messages")).to_contain_text("Hello! Ask us anything.")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(launcher).to_be_focused()
    finally:
        ctx.close()


def test_widget_script_size_and_headers(site: Site) -> None:
    import httpx

    r = httpx.get(site.url + "/pocketping/widget.js", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    raw = r.content
    assert len(gzip.compress(raw, 9)) < 10 * 1024
    assert b"innerHTML" not in raw.replace(b"ui.launcher.innerHTML = '<svg", b"")
    again = httpx.get(site.url + "/pocketping/widget.js", headers={"If-None-Match": r.headers["etag"]}, timeout=10)
    assert again.status_code == 304


def drop_streams(site: Site, session_id: str) -> None:
    """End every server-side stream of a session (as a restart or an idle proxy would)."""

    async def drop() -> None:
        site.pp.hub.close_channel(session_id)

    site.run(drop())


def operator_says(site: Site, session_id: str, *texts: str) -> None:
    for text in texts:
        site.run(site.pp.send_message(session_id, content=text))


def test_network_loss_catches_up_once_in_order_and_reconnects(context: Any, site: Site) -> None:
    page = open_widget(context, site)
    sid = page.evaluate("PocketPing.sessionId")
    operator_says(site, sid, "Before the outage")
    expect(bubbles(page)).to_have_count(1)

    context.set_offline(True)
    drop_streams(site, sid)
    page.wait_for_function("PocketPing.transport !== 'ws'")  # the widget saw the socket go
    missed = ["Missed 1", "Missed 2", "Missed 3"]
    operator_says(site, sid, *missed)
    page.wait_for_timeout(300)
    expect(bubbles(page)).to_have_count(1)  # nothing can arrive while offline

    context.set_offline(False)
    texts = bubbles(page).locator(".pp-t")
    expect(texts).to_have_text(["Before the outage", *missed], timeout=3000)
    # Back online means back on the WebSocket, not left on polling.
    page.wait_for_function("PocketPing.transport === 'ws'", timeout=5000)
    operator_says(site, sid, "After the outage")
    expect(texts).to_have_text(["Before the outage", *missed, "After the outage"], timeout=2000)
    page.wait_for_timeout(300)
    expect(bubbles(page)).to_have_count(5)  # no late duplicates from the catch-up and the replay
    assert [m.content for m in site.messages(sid)] == ["Before the outage", *missed, "After the outage"]


HIDE = """(hidden) => {
  if (!('__ppHidden' in window)) {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.__ppHidden });
    Object.defineProperty(document, 'visibilityState', {
      configurable: true, get: () => (window.__ppHidden ? 'hidden' : 'visible') });
  }
  window.__ppHidden = hidden;
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def test_hidden_tab_catches_up_and_reconnects_when_visible(context: Any, site: Site) -> None:
    page = open_widget(context, site)
    sid = page.evaluate("PocketPing.sessionId")
    operator_says(site, sid, "Before hiding")
    expect(bubbles(page)).to_have_count(1)

    # Hidden, and the page can reach nothing of ours while it is (a suspended background
    # tab); meanwhile the server ends the stream.
    page.evaluate(HIDE, True)
    offline = True
    failed: list[str] = []

    def http(route: Any) -> None:
        if offline:
            failed.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def socket(ws: Any) -> None:
        if offline:
            ws.close()
        else:
            ws.connect_to_server()

    page.route_web_socket(re.compile(r"/pocketping/stream"), socket)
    page.route(re.compile(r"/pocketping/(stream|messages)\?"), http)
    drop_streams(site, sid)
    page.wait_for_function("PocketPing.transport === 'poll'")
    missed = ["While hidden 1", "While hidden 2", "While hidden 3"]
    operator_says(site, sid, *missed)
    for _ in range(50):  # the widget has tried, and failed, to catch up while hidden
        if any("/messages?" in u for u in failed):
            break
        page.wait_for_timeout(100)
    assert any("/messages?" in u for u in failed)
    expect(bubbles(page)).to_have_count(1)

    offline = False
    page.evaluate(HIDE, False)
    texts = bubbles(page).locator(".pp-t")
    expect(texts).to_have_text(["Before hiding", *missed], timeout=3000)
    operator_says(site, sid, "Live again")
    expect(texts).to_have_text(["Before hiding", *missed, "Live again"], timeout=4000)  # polls every 2 s
    # Polling was only the stopgap: the widget climbs back to the WebSocket (at most 10 s
    # after its previous attempt) and no message is shown twice.
    page.wait_for_function("PocketPing.transport === 'ws'", timeout=12_000)
    operator_says(site, sid, "Over the socket")
    expect(texts).to_have_text(["Before hiding", *missed, "Live again", "Over the socket"], timeout=2000)
    expect(bubbles(page)).to_have_count(6)


def test_own_message_does_not_hide_an_older_missed_reply(context: Any, site: Site) -> None:
    page = open_widget(context, site)
    sid = page.evaluate("PocketPing.sessionId")
    offline = True

    def http(route: Any) -> None:
        if offline:
            route.abort()
        else:
            route.continue_()

    def socket(ws: Any) -> None:
        if offline:
            ws.close()
        else:
            ws.connect_to_server()

    # The stream is down and catching up fails, but posting still works.
    page.route_web_socket(re.compile(r"/pocketping/stream"), socket)
    page.route(re.compile(r"/pocketping/(stream|messages)\?"), http)
    drop_streams(site, sid)
    page.wait_for_function("PocketPing.transport === 'poll'")
    operator_says(site, sid, "Missed reply")
    say(page, "Sent after it")
    stored(page)
    # The visitor's own, newer message must not move the catch-up cursor past the reply.
    offline = False
    page.evaluate(HIDE, False)
    expect(bubbles(page).locator(".pp-t")).to_have_text(["Sent after it", "Missed reply"], timeout=4000)
    assert [m.content for m in site.messages(sid)] == ["Missed reply", "Sent after it"]
