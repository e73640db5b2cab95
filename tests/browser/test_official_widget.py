"""The official widget (@pocketping/widget 2.6.0, unchanged) against our server: the visitor
writes, the operator answers from our console, the reply appears in real time; history across
reloads, the WebSocket → SSE → polling fallback, custom events both ways, edit and delete from
the context menu, read receipts. Every test also checks that the page logged no error and that
no call to our server failed."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route

from pocketping.files import LocalFileStore

from ..conftest import LiveServer
from .conftest import OFFICIAL_PAGE, TOKEN, Site, make_pp

# The official widget started programmatically, so the page can hold its client and callbacks
# (``PocketPing.init`` is what the script-tag auto-init calls too).
PROGRAMMATIC_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Official widget</title>
</head><body><h1>Official widget page (programmatic)</h1>
<script src="/official-widget.js"></script>
<script>
window.ppEvents = []; window.ppTransport = null;
window.ppClient = PocketPing.init({
  endpoint: '/pocketping',
  operatorName: 'Ann',
  onEvent: (e) => window.ppEvents.push(e),
});
PocketPing.on('wsConnected', () => { window.ppTransport = 'ws'; });
PocketPing.on('sseConnected', () => { window.ppTransport = 'sse'; });
</script></body></html>"""
PROGRAMMATIC_PATH = "/official-programmatic"
# The same, with the widget's page on another origin than the server (localhost ⇄ 127.0.0.1).
CROSS_ORIGIN_PAGE = PROGRAMMATIC_PAGE.replace(
    "endpoint: '/pocketping'",
    "endpoint: location.protocol + '//' + (location.hostname === 'localhost' ? '127.0.0.1' : 'localhost')"
    " + ':' + location.port + '/pocketping'",
)
CROSS_ORIGIN_PATH = "/official-cross-origin"


class OfficialSite(Site):
    """A live server with the official widget started from its script tag (``/official``) and
    programmatically (``/official-programmatic``), PocketPing mounted at ``/pocketping``. The
    pages come from the server itself: Chromium's local-network checks treat a page fulfilled
    by the test harness as public and then refuse its WebSocket to 127.0.0.1."""

    def __init__(self, official: Path) -> None:
        self.pp = make_pp()
        self.uploads = tempfile.TemporaryDirectory(prefix="pocketping-uploads-")
        self.pp.files = LocalFileStore(self.uploads.name)
        self.official = official
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status) as the server answered
        inner = self.pp.asgi_app

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return await inner(scope, receive, send)

            async def send_and_record(message: Any) -> None:
                if message["type"] == "http.response.start":
                    self.calls.append((scope["method"], scope["path"], message["status"]))
                await send(message)

            await inner(scope, receive, send_and_record)

        async def page(request: Request) -> Response:
            return HTMLResponse(OFFICIAL_PAGE)

        async def programmatic(request: Request) -> Response:
            return HTMLResponse(PROGRAMMATIC_PAGE)

        async def cross_origin(request: Request) -> Response:
            return HTMLResponse(CROSS_ORIGIN_PAGE)

        async def no_icon(request: Request) -> Response:
            return Response(status_code=204)

        async def script(request: Request) -> Response:
            return FileResponse(official, media_type="application/javascript")

        app = Starlette(
            routes=[
                Route("/official", page),
                Route(PROGRAMMATIC_PATH, programmatic),
                Route(CROSS_ORIGIN_PATH, cross_origin),
                Route("/official-widget.js", script),
                Route("/favicon.ico", no_icon),
                Mount("/pocketping", app=recorded),
            ],
            lifespan=self.pp.lifespan,
        )
        self.server = LiveServer(app).start()
        self.url = self.server.url
        self.console_url = f"{self.url}/pocketping/console?token={TOKEN}"

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.uploads.cleanup()


@pytest.fixture
def official_site(official_widget: Path) -> Iterator[OfficialSite]:
    s = OfficialSite(official_widget)
    try:
        yield s
    finally:
        s.stop()


class Watch:
    """What a page reports: uncaught errors, console errors and warnings, failed requests,
    and responses with an error status from our server."""

    def __init__(self, page: Any, site: Site) -> None:
        self.site = site
        self.problems: list[str] = []
        self.expected: list[Callable[[str], bool]] = []
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console.{m.type}: {m.text} ({m.location.get('url')})")
                if m.type in ("error", "warning") and not m.location.get("url", "").endswith("/favicon.ico")
                else None
            ),
        )
        page.on(
            "requestfailed",
            lambda r: self.problems.append(f"failed: {r.method} {r.url} {r.failure}"),
        )
        page.on(
            "response",
            lambda r: (
                self.problems.append(f"status {r.status}: {r.request.method} {r.url}")
                if r.url.startswith(site.url + "/pocketping/") and r.status >= 400
                else None
            ),
        )

    def allow(self, pattern: str) -> None:
        """A failure the test causes on purpose (a blocked transport)."""
        rx = re.compile(pattern)
        self.expected.append(lambda text: bool(rx.search(text)))

    def unexpected(self) -> list[str]:
        """Problems seen by the page, and any call our server answered with an error status
        (beacons included, which the page cannot see)."""
        calls = getattr(self.site, "calls", [])
        problems = self.problems + [f"server answered {st}: {m} {p}" for m, p, st in calls if st >= 400]
        return [p for p in problems if not any(ok(p) for ok in self.expected)]


def open_page(context: Any, site: Site, path: str = "/official") -> tuple[Any, Watch]:
    page = context.new_page()
    watch = Watch(page, site)
    page.goto(site.url + path)
    return page, watch


def widget(page: Any) -> Any:
    return page.locator("#pocketping-container")


def send(page: Any, text: str) -> None:
    w = widget(page)
    if w.locator(".pp-window").count() == 0:
        w.locator(".pp-toggle").click()
    box = w.locator(".pp-input")
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")
    expect(w.locator(".pp-message-visitor", has_text=text)).to_have_count(1)


def session_id(site: Site) -> str:
    sessions = site.run(site.pp.get_sessions())
    assert len(sessions) == 1
    return str(sessions[0].id)


def eventually(page: Any, check: Callable[[], bool], timeout: float = 8.0) -> None:
    """Wait for ``check()``; waits through the page so its events keep being delivered."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        page.wait_for_timeout(50)


def test_official_widget_round_trip(context: Any, operator_context: Any, official_site: Site) -> None:
    site = official_site
    visitor, watch = open_page(context, site)
    container = widget(visitor)
    container.locator(".pp-toggle").click()
    box = container.locator(".pp-input")
    expect(box).to_be_enabled()
    box.fill("Hello from the official widget")
    box.press("Enter")
    expect(container.get_by_text("Hello from the official widget")).to_have_count(1)

    sid = session_id(site)
    assert visitor.evaluate("localStorage.getItem('pocketping_session_id')") == sid
    eventually(visitor, lambda: len(site.messages(sid)) == 1)
    assert [(m.sender, m.content) for m in site.messages(sid)] == [("visitor", "Hello from the official widget")]

    console = operator_context.new_page()
    console.goto(site.console_url)
    expect(console.locator("#conn")).to_have_text("Live")
    console.get_by_role("button", name=re.compile("Conversation with .*1 unread")).click()
    console.get_by_label("Reply").fill("Hello from the console")
    console.get_by_role("button", name="Send", exact=True).click()

    expect(container.locator(".pp-message-operator", has_text="Hello from the console")).to_have_count(1)
    assert [m.sender for m in site.messages(sid)] == ["visitor", "operator"]

    # Replies sent from Python reach it the same way.
    site.run(site.pp.send_message(sid, "Hello from Python"))
    expect(container.locator(".pp-message-operator", has_text="Hello from Python")).to_have_count(1)
    expect(container.locator(".pp-message")).to_have_count(3)  # no duplicate of the echoed visitor message
    assert watch.unexpected() == []


def test_official_widget_reload_keeps_history_and_session(context: Any, official_site: OfficialSite) -> None:
    site = official_site
    page, watch = open_page(context, site)
    send(page, "First question")
    sid = session_id(site)
    eventually(page, lambda: len(site.messages(sid)) == 1)
    site.run(site.pp.send_message(sid, "First answer"))
    expect(widget(page).get_by_text("First answer")).to_have_count(1)
    visitor_id = page.evaluate("localStorage.getItem('pocketping_visitor_id')")

    page.reload()
    # The unloading page's disconnect beacon: Chromium reports it as aborted (the document that
    # sent it is gone), but it reached the server and was answered.
    eventually(page, lambda: any(c[1].endswith("/disconnect") for c in site.calls))
    assert [c[2] for c in site.calls if c[1].endswith("/disconnect")] == [200]
    watch.allow(r"^failed: POST \S+/pocketping/disconnect net::ERR_ABORTED$")
    w = widget(page)
    if w.locator(".pp-window").count() == 0:
        w.locator(".pp-toggle").click()
    expect(w.locator(".pp-message")).to_have_count(2)
    expect(w.locator(".pp-message-visitor")).to_have_text(re.compile("First question"))
    expect(w.locator(".pp-message-operator")).to_have_text(re.compile("First answer"))
    send(page, "Second question")
    assert page.evaluate("localStorage.getItem('pocketping_session_id')") == sid
    assert page.evaluate("localStorage.getItem('pocketping_visitor_id')") == visitor_id
    assert session_id(site) == sid
    eventually(page, lambda: len(site.messages(sid)) == 3)
    assert [m.content for m in site.messages(sid)] == ["First question", "First answer", "Second question"]
    assert watch.unexpected() == []


def block_websocket(page: Any) -> None:
    # The handshake never reaches the server: the socket closes at once, as behind a proxy
    # that does not pass upgrades.
    page.route_web_socket(re.compile(r"/pocketping/stream"), lambda ws: ws.close())


def test_official_widget_falls_back_to_sse(context: Any, official_site: Site) -> None:
    site = official_site
    page = context.new_page()
    block_websocket(page)
    watch = Watch(page, site)
    page.goto(site.url + PROGRAMMATIC_PATH)
    page.wait_for_function("window.ppTransport === 'sse'")
    send(page, "Over SSE")
    sid = session_id(site)
    site.run(site.pp.send_message(sid, "Reply over SSE"))
    expect(widget(page).locator(".pp-message-operator", has_text="Reply over SSE")).to_have_count(1)
    eventually(page, lambda: [m.content for m in site.messages(sid)] == ["Over SSE", "Reply over SSE"])
    # The visitor message is stored once and shown once (the SSE echo is deduplicated).
    expect(widget(page).locator(".pp-message")).to_have_count(2)
    assert page.evaluate("window.ppTransport") == "sse"
    # Edits and custom events travel over SSE as well.
    reply = site.messages(sid)[1]
    site.run(site.pp.edit_message(sid, reply.id, "Reply over SSE, edited"))
    expect(widget(page).locator(f"#pp-msg-{reply.id}")).to_contain_text("Reply over SSE, edited")
    site.run(site.pp.emit_event(sid, "show_offer", discount=10))
    page.wait_for_function("window.ppEvents.length === 1")
    assert page.evaluate("window.ppEvents")[0]["data"] == {"discount": 10}
    assert watch.unexpected() == []


def test_official_widget_falls_back_to_polling(context: Any, official_site: Site) -> None:
    site = official_site
    page = context.new_page()
    block_websocket(page)
    watch = Watch(page, site)
    watch.allow(r"/pocketping/stream\?")  # the blocked EventSource
    page.route(re.compile(r"/pocketping/stream\?"), lambda route: route.abort())
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/pocketping/messages?" in r.url else None)
    page.goto(site.url + PROGRAMMATIC_PATH)
    send(page, "Over polling")
    sid = session_id(site)
    eventually(page, lambda: len(polls) >= 1)
    site.run(site.pp.send_message(sid, "Reply over polling"))
    expect(widget(page).locator(".pp-message-operator", has_text="Reply over polling")).to_have_count(1)
    expect(widget(page).locator(".pp-message")).to_have_count(2)
    assert page.evaluate("window.ppTransport") is None
    eventually(page, lambda: any("after=" in u for u in polls))  # the ISO cursor, once its request is seen
    assert all("sessionId=" + sid in u for u in polls)
    # Keep polling a little: every poll (and its screenshot check) must succeed.
    n = len(polls)
    eventually(page, lambda: len(polls) >= n + 2)
    eventually(page, lambda: [m.content for m in site.messages(sid)] == ["Over polling", "Reply over polling"])
    assert watch.unexpected() == []


def test_official_widget_custom_events_both_ways(context: Any, official_site: Site) -> None:
    site = official_site
    received: list[tuple[str, Any, str | None]] = []

    @site.pp.on_event
    def got(session: Any, event: Any) -> None:
        received.append((event.name, event.data, session.id))

    page, watch = open_page(context, site, PROGRAMMATIC_PATH)
    page.wait_for_function("window.ppTransport === 'ws'")
    sid = session_id(site)
    page.evaluate("PocketPing.trigger('clicked_pricing', {plan: 'pro'})")
    eventually(page, lambda: received != [])
    assert received == [("clicked_pricing", {"plan": "pro"}, sid)]

    page.evaluate("() => { window.offers = []; PocketPing.onEvent('show_offer', (data) => window.offers.push(data)); }")
    site.run(site.pp.emit_event(sid, "show_offer", discount=20))
    page.wait_for_function("window.offers.length === 1")
    assert page.evaluate("window.offers") == [{"discount": 20}]
    events = page.evaluate("window.ppEvents")
    assert [(e["name"], e["data"]) for e in events] == [("show_offer", {"discount": 20})]
    assert isinstance(events[0]["timestamp"], str)
    assert watch.unexpected() == []


def test_official_widget_edit_and_delete_from_the_context_menu(context: Any, official_site: Site) -> None:
    site = official_site
    page, watch = open_page(context, site)
    page.on("dialog", lambda d: d.accept())  # "Delete this message?"
    w = widget(page)
    send(page, "Typo hree")
    send(page, "Delete me")
    sid = session_id(site)
    eventually(page, lambda: len(site.messages(sid)) == 2)
    first, second = site.messages(sid)

    w.locator(".pp-message-visitor", has_text="Typo hree").click(button="right")
    w.locator(".pp-message-menu").get_by_role("button", name="Edit").click()
    w.locator(".pp-edit-input").fill("Typo here")
    w.locator(".pp-edit-save").click()
    edited = w.locator(".pp-message-visitor", has_text="Typo here")
    expect(edited.locator(".pp-edited-badge")).to_have_count(1)
    expect(w.locator(".pp-edit-modal")).to_have_count(0)
    eventually(page, lambda: site.messages(sid)[0].content == "Typo here")
    assert site.messages(sid)[0].edited_at is not None

    w.locator(".pp-message-visitor", has_text="Delete me").click(button="right")
    w.locator(".pp-message-menu").get_by_role("button", name="Delete").click()
    expect(w.locator(f"#pp-msg-{second.id}.pp-message-deleted")).to_have_text(re.compile("Message deleted"))
    eventually(page, lambda: site.messages(sid)[1].deleted_at is not None)

    # An operator's edit and delete reach the widget too.
    site.run(site.pp.send_message(sid, "Operator draft"))
    reply = w.locator(".pp-message-operator", has_text="Operator draft")
    expect(reply).to_have_count(1)
    op = site.messages(sid)[2]
    site.run(site.pp.edit_message(sid, op.id, "Operator final"))
    expect(w.locator(f"#pp-msg-{op.id}")).to_contain_text("Operator final")
    expect(w.locator(f"#pp-msg-{op.id} .pp-edited-badge")).to_have_count(1)
    site.run(site.pp.delete_message(sid, op.id))
    expect(w.locator(f"#pp-msg-{op.id}.pp-message-deleted")).to_have_count(1)
    assert first.id != second.id
    assert watch.unexpected() == []


def test_official_widget_read_receipts(context: Any, official_site: Site) -> None:
    site = official_site
    page, watch = open_page(context, site, PROGRAMMATIC_PATH)
    page.wait_for_function("window.ppTransport === 'ws'")
    send(page, "Is anyone there?")
    sid = session_id(site)
    eventually(page, lambda: len(site.messages(sid)) == 1)
    visitor_msg = site.messages(sid)[0]

    # Operator reads the visitor's message: the widget's copy turns "read".
    site.run(site.pp.mark_read(sid, [visitor_msg.id]))
    page.wait_for_function(
        f"window.ppClient.getMessages().some(m => m.id === {visitor_msg.id!r} && m.status === 'read')"
    )

    # Operator answers while the window is open: the widget POSTs /read, the server stores it.
    reads: list[Any] = []
    page.on("request", lambda r: reads.append(r.post_data_json) if r.url.endswith("/pocketping/read") else None)
    site.run(site.pp.send_message(sid, "Yes, here"))
    expect(widget(page).locator(".pp-message-operator", has_text="Yes, here")).to_have_count(1)
    eventually(page, lambda: site.messages(sid)[1].status == "read")
    op = site.messages(sid)[1]
    assert op.read_at is not None
    # The page's request listener runs on Playwright's event dispatch, which may come after
    # the server stored the read: wait for the request, do not assume it was dispatched.
    eventually(page, lambda: bool(reads))
    assert reads[0]["messageIds"] == [op.id] and reads[0]["status"] == "read"

    # Closed window: a new reply counts as unread on the launcher until it is opened.
    widget(page).locator(".pp-close-btn").click()
    expect(widget(page).locator(".pp-window")).to_have_count(0)
    page.evaluate("window.ppClient.config.autoOpenOnMessage = false")
    site.run(site.pp.send_message(sid, "One more thing"))
    expect(widget(page).locator(".pp-unread-badge")).to_have_text("1")
    assert site.messages(sid)[2].status != "read"
    widget(page).locator(".pp-toggle").click()
    eventually(page, lambda: site.messages(sid)[2].status == "read")
    assert watch.unexpected() == []


def test_official_widget_cross_origin_prechat_identify_csat_and_beacons(
    context: Any, official_site: OfficialSite
) -> None:
    """The widget's page on another origin than the server: every call is a CORS request
    (preflights for the JSON calls, PATCH and DELETE; credentialed beacons)."""
    site = official_site
    site.pp.prechat_form = {
        "enabled": True,
        "required": False,
        "timing": "before-first-message",
        "fields": "email-only",
    }
    page = context.new_page()
    watch = Watch(page, site)
    page.on("dialog", lambda d: d.accept())
    page.goto(site.url.replace("127.0.0.1", "localhost") + CROSS_ORIGIN_PATH)
    page.wait_for_function("window.ppTransport === 'ws'")
    sid = session_id(site)
    w = widget(page)
    w.locator(".pp-toggle").click()

    w.locator("input[type=email]").fill("ann@example.com")
    w.locator("button[type=submit]").click()
    expect(w.locator(".pp-input")).to_be_enabled()
    assert site.run(site.pp.get_session(sid)).data["prechat"] == {"email": "ann@example.com"}
    page.evaluate("() => PocketPing.identify({id: 'user_1', email: 'ann@example.com', plan: 'pro'})")
    eventually(page, lambda: site.run(site.pp.get_session(sid)).identity is not None)
    assert site.run(site.pp.get_session(sid)).identity == {"id": "user_1", "email": "ann@example.com", "plan": "pro"}

    w.locator(".pp-input").press_sequentially("Helo", delay=10)  # one /typing per keystroke
    w.locator(".pp-input").press("Enter")
    expect(w.locator(".pp-message-visitor", has_text="Helo")).to_have_count(1)
    eventually(page, lambda: len(site.messages(sid)) == 1)
    w.locator(".pp-message-visitor", has_text="Helo").click(button="right")
    w.locator(".pp-message-menu").get_by_role("button", name="Edit").click()
    w.locator(".pp-edit-input").fill("Hello")
    w.locator(".pp-edit-save").click()
    eventually(page, lambda: site.messages(sid)[0].content == "Hello")
    w.locator(".pp-message-visitor", has_text="Hello").click(button="right")
    w.locator(".pp-message-menu").get_by_role("button", name="Delete").click()
    eventually(page, lambda: site.messages(sid)[0].deleted_at is not None)
    expect(w.locator(".pp-message-deleted")).to_have_count(1)

    site.run(site.pp.send_message(sid, "Glad to help"))
    expect(w.locator(".pp-message-operator", has_text="Glad to help")).to_have_count(1)
    eventually(page, lambda: site.messages(sid)[1].status == "read")

    # The operator asks for a rating; the visitor gives 5 with a comment.
    assert site.pp.loop is not None
    site.pp.loop.call_soon_threadsafe(site.pp.publish, sid, "csat_request", {"requestedAt": "2026-01-01T00:00:00.000Z"})
    w.locator(".pp-csat-face").nth(4).click()
    w.locator(".pp-csat-textarea").fill("Quick and kind")
    w.locator(".pp-csat-submit").click()
    expect(w.locator(".pp-csat-thanks")).to_have_count(1)
    assert site.run(site.pp.get_session(sid)).data["csat"] == {"score": 5, "comment": "Quick and kind"}

    # Tab hidden, then the visitor leaves: both beacons reach the server.
    page.evaluate(
        "() => { Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    eventually(page, lambda: any(c[1].endswith("/visibility") and c[0] == "POST" for c in site.calls))
    page.goto("about:blank")
    eventually(page, lambda: any(c[1].endswith("/disconnect") and c[0] == "POST" for c in site.calls))
    watch.allow(r"^failed: POST \S+/pocketping/disconnect net::ERR_ABORTED$")

    posted = {(m, p.rsplit("/pocketping", 1)[-1].split("/msg_")[0]) for m, p, st in site.calls if st < 400}
    for call in [
        ("OPTIONS", "/connect"),
        ("POST", "/prechat"),
        ("POST", "/identify"),
        ("POST", "/typing"),
        ("OPTIONS", "/message"),
        ("PATCH", "/message"),
        ("DELETE", "/message"),
        ("POST", "/read"),
        ("POST", "/csat"),
        ("POST", "/visibility"),
        ("POST", "/disconnect"),
    ]:
        assert call in posted, call
    assert watch.unexpected() == []


def test_official_widget_attachment(context: Any, official_site: OfficialSite) -> None:
    site = official_site
    page, watch = open_page(context, site)
    w = widget(page)
    w.locator(".pp-toggle").click()
    expect(w.locator(".pp-input")).to_be_enabled()
    page.set_input_files(
        "#pocketping-container input[type=file]",
        files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"hello file"}],
    )
    expect(w.locator(".pp-attachment-preview.pp-attachment-ready")).to_have_count(1)
    w.locator(".pp-input").fill("See the file")
    w.locator(".pp-input").press("Enter")
    bubble = w.locator(".pp-message-visitor", has_text="See the file")
    expect(bubble.locator(".pp-message-attachments")).to_contain_text("note.txt")
    sid = session_id(site)
    eventually(page, lambda: len(site.messages(sid)) == 1)
    (message,) = site.messages(sid)
    assert [(a.filename, a.mime_type, a.size, a.status) for a in message.attachments] == [
        ("note.txt", "text/plain", 10, "ready")
    ]
    assert watch.unexpected() == []


def test_official_widget_polling_sees_an_edit_made_just_before_its_read(context: Any, official_site: Site) -> None:
    site = official_site
    page = context.new_page()
    block_websocket(page)
    page.route(re.compile(r"/pocketping/stream\?"), lambda route: route.abort())
    page.goto(site.url + PROGRAMMATIC_PATH)
    send(page, "Over polling")
    sid = session_id(site)
    reply = site.run(site.pp.send_message(sid, "Reply over polling"))
    expect(widget(page).locator(f"#pp-msg-{reply.id}")).to_have_count(1)
    # Edited right away, before the widget's /read (about 1 s after the reply shows).
    site.run(site.pp.edit_message(sid, reply.id, "Reply over polling, edited"))
    expect(widget(page).locator(f"#pp-msg-{reply.id}")).to_contain_text("Reply over polling, edited")
