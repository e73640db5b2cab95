"""The official widget (@pocketping/widget 2.6.0, unchanged) against our server: the visitor
writes, the operator answers from our console, the reply appears in real time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import Site, make_pp


@pytest.fixture
def official_site(official_widget: Path) -> Iterator[Site]:
    s = Site(make_pp(), official=official_widget)
    try:
        yield s
    finally:
        s.stop()


def test_official_widget_round_trip(context: Any, operator_context: Any, official_site: Site) -> None:
    site = official_site
    errors: list[str] = []
    visitor = context.new_page()
    visitor.on("pageerror", lambda e: errors.append(str(e)))
    visitor.goto(site.url + "/official")
    container = visitor.locator("#pocketping-container")
    container.locator(".pp-toggle").click()
    box = container.locator(".pp-input")
    expect(box).to_be_enabled()
    box.fill("Hello from the official widget")
    box.press("Enter")
    expect(container.get_by_text("Hello from the official widget")).to_have_count(1)

    sessions = site.run(site.pp.get_sessions())
    assert len(sessions) == 1
    sid = sessions[0].id
    assert visitor.evaluate("localStorage.getItem('pocketping_session_id')") == sid
    assert [(m.sender, m.content) for m in site.messages(sid)] == [("visitor", "Hello from the official widget")]

    console = operator_context.new_page()
    console.goto(site.console_url)
    expect(console.locator("#conn")).to_have_text("Live")
    console.get_by_role("button", name=re.compile("Conversation with .*1 unread")).click()
    console.get_by_label("Reply").fill("Hello from the console")
    console.get_by_role("button", name="Send", exact=True).click()

    expect(container.get_by_text("Hello from the console")).to_have_count(1)
    assert [m.sender for m in site.messages(sid)] == ["visitor", "operator"]
    assert errors == []
