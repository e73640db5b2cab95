"""Browser fixtures: Debian's Chromium driven by playwright, a real uvicorn server with a page
embedding our widget (``/``), a page embedding the official widget (``/official``), and the
console. Every test in this folder is marked ``browser``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route

from pocketping import MemoryStorage, PocketPing

from ..conftest import LiveServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "console-test-token"
OFFICIAL_VERSION = "2.6.0"
OFFICIAL_CACHE = ROOT / ".cache" / "official-widget"
OFFICIAL_FILE = "package/dist/pocketping.min.global.js"
TIMEOUT_MS = 10_000

WIDGET_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Test shop</h1><p>Product page.</p>
<script src="/pocketping/widget.js" data-endpoint="/pocketping" data-title="Test shop"
 data-operator-name="Ann" data-welcome-message="Hello! Ask us anything."></script></body></html>"""

OFFICIAL_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Official widget</title>
</head><body><h1>Official widget page</h1>
<script src="/official-widget.js" data-endpoint="/pocketping"></script></body></html>"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("POCKETPING_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            "Debian's Chromium is missing (looked for $POCKETPING_CHROMIUM, `chromium` on PATH and /usr/bin/chromium). "
            "Install it with `apt-get install -y chromium` (scripts/test does this), or point POCKETPING_CHROMIUM "
            "at a Chromium binary. Playwright's own browser downloads are not used.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    # Module scope, not session: playwright's sync API keeps an asyncio loop running in this
    # thread while it is started, which would break the async tests of later modules.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


#: The unchanged official bundle kept beside the project for tests (see its README): next to
#: this checkout, or at the workplace's shared folder when the checkout is a clone elsewhere.
_BUNDLE = Path("vendor") / f"pocketping-widget-{OFFICIAL_VERSION}" / "pocketping.min.global.js"
VENDORED_PLACES = (ROOT.parent / "shared" / _BUNDLE, Path("/work/shared") / _BUNDLE)


@pytest.fixture(scope="session")
def official_widget() -> Path:
    """The official widget's IIFE build, ``@pocketping/widget@2.6.0``: the file named by
    $POCKETPING_OFFICIAL_WIDGET, else the vendored copy, else the npm registry's package
    unpacked under .cache/ (this registry does not serve it: the vendored copy is the source).
    When none is reachable the tests say so and are skipped: the bundle is not ours to ship."""
    given = os.environ.get("POCKETPING_OFFICIAL_WIDGET")
    if given:
        return Path(given)
    for vendored in VENDORED_PLACES:
        if vendored.exists():
            return vendored
    target = OFFICIAL_CACHE / OFFICIAL_FILE
    if not target.exists():
        OFFICIAL_CACHE.mkdir(parents=True, exist_ok=True)
        npm = shutil.which("npm")
        detail = "npm is not installed"
        if npm:
            done = subprocess.run(
                [npm, "pack", f"@pocketping/widget@{OFFICIAL_VERSION}"],
                cwd=OFFICIAL_CACHE,
                capture_output=True,
                text=True,
                timeout=120,
            )
            tarball = OFFICIAL_CACHE / f"pocketping-widget-{OFFICIAL_VERSION}.tgz"
            if done.returncode == 0 and tarball.exists():
                subprocess.run(["tar", "xzf", tarball.name], cwd=OFFICIAL_CACHE, check=True, timeout=60)
            out = (done.stderr or done.stdout).strip().splitlines()
            detail = next((line for line in out if "404" in line), out[0] if out else "no output")
        if not target.exists():
            places = " or ".join(str(v) for v in VENDORED_PLACES)
            pytest.skip(
                f"the official widget @pocketping/widget@{OFFICIAL_VERSION} is not at {places} and could not be "
                f"fetched from the npm registry ({detail}); set POCKETPING_OFFICIAL_WIDGET to its "
                "dist/pocketping.min.global.js"
            )
    return target


class Site:
    """A live server: widget page at ``/``, official widget page at ``/official``, PocketPing
    (widget endpoints and console) at ``/pocketping``."""

    def __init__(self, pp: PocketPing, official: Path | None = None) -> None:
        self.pp = pp
        self.official = official

        async def home(request: Request) -> Response:
            return HTMLResponse(WIDGET_PAGE)

        async def official_page(request: Request) -> Response:
            return HTMLResponse(OFFICIAL_PAGE)

        async def official_js(request: Request) -> Response:
            if self.official is None:
                return Response(status_code=404)
            return FileResponse(self.official, media_type="application/javascript")

        app = Starlette(
            routes=[
                Route("/", home),
                Route("/official", official_page),
                Route("/official-widget.js", official_js),
                Mount("/pocketping", app=pp.asgi_app),
            ],
            lifespan=pp.lifespan,
        )
        self.server = LiveServer(app).start()
        self.url = self.server.url
        self.console_url = f"{self.url}/pocketping/console?token={TOKEN}"

    def run(self, coro: Any) -> Any:
        """Run a PocketPing coroutine on the server's event loop (playwright's sync API keeps
        a loop of its own in the test thread, so ``pp.sync`` cannot be used here)."""
        assert self.pp.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.pp.loop).result(10)

    def messages(self, session_id: str) -> list[Any]:
        return list(self.run(self.pp.get_messages(session_id)))

    def stop(self) -> None:
        self.server.stop()


def make_pp() -> PocketPing:
    return PocketPing(
        storage=MemoryStorage(),
        welcome_message="Hi! How can we help?",
        console_token=TOKEN,
        sse_heartbeat=1.0,
    )


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site(make_pp())
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1100, "height": 760})
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def operator_context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1100, "height": 700})
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()
