"""pocketping.testing: what users test their own hooks and handlers with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pocketping import MemoryStorage, PocketPing
from pocketping.testing import FakeBridge, WidgetClient


def test_widget_client_drives_hooks_in_process() -> None:
    seen: list[tuple[str, Any]] = []
    pp = PocketPing(
        storage=MemoryStorage(),
        welcome_message="Hi!",
        on_session_start=lambda s: seen.append(("start", s.visitor_id)),
        on_message=lambda s, m: seen.append(("message", m.content)),
        on_event=lambda s, e: seen.append(("event", (e.name, e.data))),
    )
    with WidgetClient(pp, visitor_id="visitor-7") as widget:
        answer = widget.connect()
        assert answer["welcomeMessage"] == "Hi!"
        widget.send("Hello?")
        widget.trigger("clicked_pricing", plan="pro")
        widget.wait_for_hooks()
        assert [m["content"] for m in widget.messages()] == ["Hello?"]
        with widget.stream() as ws:
            pp.sync.send_message(widget.session_id or "", content="Hi, how can I help?")
            frame = ws.next("message")
            while frame["data"]["sender"] != "operator":
                frame = ws.next("message")
            assert frame["data"]["content"] == "Hi, how can I help?"
    assert seen == [("start", "visitor-7"), ("message", "Hello?"), ("event", ("clicked_pricing", {"plan": "pro"}))]


def test_fake_bridge_relays_both_ways() -> None:
    fake = FakeBridge()
    pp = PocketPing(storage=MemoryStorage(), bridges=[fake])
    with WidgetClient(pp) as widget:
        widget.connect()
        sid = widget.session_id or ""
        widget.send("Where is my order?")
        assert pp.sync.run(fake.delivered())
        texts = fake.texts(sid)
        assert texts[0].startswith("🆕 New conversation") and texts[-1].endswith("Where is my order?")
        pp.sync.run(fake.reply(sid, "It ships today."))
        assert [(m["sender"], m["content"]) for m in widget.messages()][-1] == ("operator", "It ships today.")
        pp.sync.run(fake.reply(sid, "!close"))
        assert pp.sync.get_session(sid).status == "closed"


def test_the_readme_example_runs() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("### Testing your handlers", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    namespace["test_new_visitors_reach_the_team"]()
