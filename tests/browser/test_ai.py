"""The AI first responder seen in a real browser: its answer in our widget, its handoff reason
in the console (never in the widget), "Hand back to the AI" and "Take over"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from pocketping import AIResponder, MemoryStorage, PocketPing

from ..fakes.openai import FakeOpenAI, tool_call
from .conftest import TOKEN, Site
from .test_widget import bubbles, open_console, open_widget, say


@pytest.fixture
def ai_site(llm: FakeOpenAI) -> Iterator[Site]:
    ai = AIResponder(base_url=llm.url + "/v1", model="test-model", delay=0.5, retry_schedule=(0.2, 0.2))
    s = Site(PocketPing(storage=MemoryStorage(), console_token=TOKEN, sse_heartbeat=1.0, ai=ai, rate_limits=None))
    try:
        yield s
    finally:
        s.stop()


def test_the_ai_answers_in_the_widget_and_its_handoff_shows_in_the_console(
    context: Any, operator_context: Any, ai_site: Site, llm: FakeOpenAI
) -> None:
    llm.script = ["We ship to Lyon in 2 days.", tool_call("handoff", {"reason": "the visitor wants a discount"})]
    visitor = open_widget(context, ai_site)
    say(visitor, "Do you ship to Lyon?")
    expect(bubbles(visitor).last.locator(".pp-t")).to_have_text("We ship to Lyon in 2 days.")
    expect(bubbles(visitor).last).to_contain_text("AI")

    console = open_console(operator_context, ai_site)
    console.get_by_role("button", name=re.compile(r"Conversation with")).first.click()
    expect(console.locator("#ai-text")).to_have_text("The AI responder answers this conversation.")

    say(visitor, "Can I get a discount?")
    expect(console.locator("#messages li.note")).to_have_text("AI handed over: the visitor wants a discount")
    expect(console.locator("#ai-text")).to_contain_text("AI off: the visitor wants a discount")
    expect(bubbles(visitor).last.locator(".pp-t")).to_have_text("I've asked a teammate to join; they'll reply here.")
    expect(visitor.get_by_text("the visitor wants a discount")).to_have_count(0)  # the reason stays with the team

    console.get_by_role("button", name="Hand back to the AI").click()
    expect(console.get_by_role("button", name="Take over")).to_be_visible()
    sid = visitor.evaluate("PocketPing.sessionId")
    assert ai_site.run(ai_site.pp.ai.state(sid)).active  # type: ignore[union-attr]
    console.get_by_role("button", name="Take over").click()
    expect(console.get_by_role("button", name="Hand back to the AI")).to_be_visible()
    assert not ai_site.run(ai_site.pp.ai.state(sid)).active  # type: ignore[union-attr]
