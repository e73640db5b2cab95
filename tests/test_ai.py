"""The AI first responder against a fake OpenAI-compatible server on 127.0.0.1 (the real wire
shapes), with PocketPing on a real uvicorn server; the timelines are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from pocketping import (
    AIResponder,
    BusinessHours,
    EmailNotifier,
    InvalidInput,
    PocketPing,
    SQLiteStorage,
    WebhookEndpoint,
)
from pocketping.ai import BUILT_IN_INSTRUCTIONS
from pocketping.bridges import TelegramBridge

from .conftest import LiveServer, SSEReader, connect, mounted, wait
from .fakes.harness import fast
from .fakes.openai import MALFORMED, FakeOpenAI, system_text, tool_call
from .fakes.telegram import CHAT_ID
from .receivers import Mailbox, Receiver

DELAY = 1.0
KEY = "sk-test-0123456789"


def responder(llm: FakeOpenAI, **kw: Any) -> AIResponder:
    llm.api_key = KEY if kw.get("api_key", KEY) else None
    options: dict[str, Any] = {"delay": DELAY, "retry_schedule": (0.2, 0.2), "api_key": KEY, **kw}
    return AIResponder(base_url=llm.url + "/v1", model="test-model", **options)


def make_pp(tmp_path: Path, ai: AIResponder, **kw: Any) -> PocketPing:
    return PocketPing(storage=SQLiteStorage(tmp_path / "pp.db"), ai=ai, rate_limits=None, **kw)


def say(http: httpx.Client, sid: str, text: str) -> str:
    r = http.post("/message", json={"sessionId": sid, "content": text})
    assert r.status_code == 200, r.text
    return str(r.json()["messageId"])


def by(pp: PocketPing, sid: str, sender: str) -> list[Any]:
    return [m for m in pp.sync.get_messages(sid) if m.sender == sender]


def test_a_message_is_answered_after_the_delay_with_typing_shown(
    llm: FakeOpenAI, receiver: Receiver, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    ai = responder(llm, system_prompt="We sell bicycles. Be friendly.")
    pp = make_pp(tmp_path, ai, webhooks=[WebhookEndpoint(url=receiver.url, secret=receiver.secret)])
    llm.script = ["Hello! We open at 9."]
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        sse = SSEReader(f"{base}/stream?sessionId={sid}")
        try:
            started = time.monotonic()
            say(http, sid, "When do you open?")
            typing = sse.next(timeout=DELAY + 5, type="typing")["json"]["data"]
            typing_at = time.monotonic() - started
            frame = sse.next(timeout=5, type="message")
            while frame["json"]["data"]["sender"] != "ai":
                frame = sse.next(timeout=5, type="message")
            answered_at = time.monotonic() - started
        finally:
            sse.close()
    print(f"\nai timeline: visitor +0.00 s, typing +{typing_at:.2f} s, answer +{answered_at:.2f} s (delay {DELAY} s)")
    assert typing == {"isTyping": True, "sender": "ai", "sessionId": sid}
    assert DELAY * 0.9 <= typing_at <= answered_at < DELAY + 5
    assert frame["json"]["data"]["content"] == "Hello! We open at 9."
    [answer] = by(pp, sid, "ai")
    assert answer.content == "Hello! We open at 9."
    request = llm.requests()[0]
    assert request["model"] == "test-model" and request["tools"][0]["function"]["name"] == "handoff"
    assert llm.calls[0].headers["authorization"] == f"Bearer {KEY}"
    system = system_text(request)
    assert system.startswith(BUILT_IN_INSTRUCTIONS) and "We sell bicycles. Be friendly." in system
    assert request["messages"][-1] == {"role": "user", "content": "When do you open?"}
    # Sent as a message.created webhook with sender ai, and counted by source in the stats.
    created = wait(lambda: [e for e in receiver.events() if e["data"].get("sender") == "ai"])
    assert created[0]["data"]["message"]["content"] == "Hello! We open at 9."
    assert pp.sync.run(pp.get_stats()).replies == {"ai": 1}


def test_typing_stays_shown_while_a_slow_model_writes(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pocketping.ai.responder

    monkeypatch.setattr(pocketping.ai.responder, "TYPING_REFRESH", 0.5)
    pp = make_pp(tmp_path, responder(llm))
    llm.latency = 1.8
    llm.script = ["Slow but sure."]
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        sse = SSEReader(f"{base}/stream?sessionId={sid}")
        try:
            say(http, sid, "Hello")
            shown = [sse.next(timeout=DELAY + 5, type="typing")["json"]["data"]["isTyping"]]
            while True:
                frame = sse.next(timeout=5)["json"]
                if frame["type"] == "message" and frame["data"]["sender"] == "ai":
                    break
                if frame["type"] == "typing":
                    shown.append(frame["data"]["isTyping"])
        finally:
            sse.close()
    assert shown[:3] == [True, True, True] and False not in shown


def test_a_burst_is_answered_once_as_one_turn(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    pp = make_pp(tmp_path, responder(llm, api_key=None))
    llm.script = ["All three answered."]
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        started = time.monotonic()
        for i, text in enumerate(["Hi", "I ordered a bike", "where is it?"]):
            if i:
                time.sleep(0.4)
            say(http, sid, text)
        last = time.monotonic() - started
        wait(lambda: by(pp, sid, "ai"), DELAY + 5)
        answered = time.monotonic() - started
        time.sleep(DELAY * 1.5)  # no second answer comes
    print(f"\nai burst: messages at +0.00, +0.40, +{last:.2f} s; one answer at +{answered:.2f} s")
    assert len(llm.requests()) == 1 and len(by(pp, sid, "ai")) == 1
    users = [m["content"] for m in llm.requests()[0]["messages"] if m["role"] == "user"]
    assert users == ["Hi", "I ordered a bike", "where is it?"]
    assert "authorization" not in llm.calls[0].headers  # api_key=None
    assert answered - last >= DELAY * 0.9


def test_an_answer_written_while_a_newer_message_arrives_is_dropped(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    pp = make_pp(tmp_path, responder(llm))
    llm.latency = 1.5
    llm.script = ["An answer to the first message only", "An answer to both"]
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        sse = SSEReader(f"{base}/stream?sessionId={sid}")
        try:
            started = time.monotonic()
            say(http, sid, "Do you ship to Spain?")
            sse.next(timeout=DELAY + 5, type="typing")  # the model is writing
            newer_at = time.monotonic() - started
            say(http, sid, "And to Portugal?")
            wait(lambda: by(pp, sid, "ai"), DELAY * 2 + 8)
            answered_at = time.monotonic() - started
        finally:
            sse.close()
        time.sleep(0.5)
    print(
        f"\nai drop: visitor +0.00 s, model writing, newer message +{newer_at:.2f} s, "
        f"first answer dropped, answer to both +{answered_at:.2f} s"
    )
    assert [m.content for m in by(pp, sid, "ai")] == ["An answer to both"]
    assert len(llm.answered()) == 2
    assert [m["content"] for m in llm.answered()[1]["messages"] if m["role"] == "user"][-2:] == [
        "Do you ship to Spain?",
        "And to Portugal?",
    ]
    assert answered_at - newer_at >= DELAY


def test_a_person_replying_keeps_the_ai_quiet_until_handed_back(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    pp = make_pp(tmp_path, responder(llm))
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        say(http, sid, "Is the shop open on Sunday?")
        pp.sync.send_message(sid, content="Hi, Ann here: yes, 10 to 4.", type="operator")
        say(http, sid, "Thanks! And on Monday?")
        time.sleep(DELAY * 2.5)
        assert llm.requests() == [] and by(pp, sid, "ai") == []
        # Closed and reopened: still quiet.
        pp.sync.close_session(sid)
        say(http, sid, "One more question")
        time.sleep(DELAY * 2)
        assert llm.requests() == []
        # Handed back: the next message is answered.
        pp.sync.set_ai(sid, True)
        llm.script = ["Monday too."]
        started = time.monotonic()
        say(http, sid, "And Monday?")
        wait(lambda: by(pp, sid, "ai"), DELAY + 5)
        print(f"\nai hand-back: answered {time.monotonic() - started:.2f} s after the next message")
    assert [m.content for m in by(pp, sid, "ai")] == ["Monday too."]
    with pytest.raises(InvalidInput, match="AI responder"):
        asyncio.run(PocketPing(storage=SQLiteStorage(tmp_path / "x.db")).set_ai(sid, True))


def test_a_handoff_by_tool_call_reaches_the_telegram_thread_with_its_reason(
    llm: FakeOpenAI, tg: Any, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    secret = "tg-secret-0123"
    bridge = fast(TelegramBridge(tg.token, CHAT_ID, webhook_secret=secret, api_base=tg.url))
    pp = make_pp(tmp_path, responder(llm), bridges=[bridge])
    llm.script = ["We have 3 sizes.", tool_call("handoff", {"reason": "the visitor disputes a charge"})]
    base = serve(pp)

    def thread() -> list[str]:
        return [b["text"] for b in tg.sent("sendMessage") if b.get("message_thread_id") == 1000]

    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        say(http, sid, "Which sizes?")
        wait(lambda: by(pp, sid, "ai"), DELAY + 5)
        started = time.monotonic()
        say(http, sid, "You charged me twice!")
        note = tg.wait_for(lambda: [t for t in thread() if "disputes a charge" in t], DELAY + 8)[0]
        noted_at = time.monotonic() - started
        [handoff] = by(pp, sid, "system")
        print(f"\nai handoff: visitor +0.00 s, reason in the Telegram thread +{noted_at:.2f} s")
        assert handoff.content == "I've asked a teammate to join; they'll reply here."
        assert "Not shown to the visitor" in note or "not shown to the visitor" in note
        assert any("AI assistant" in t and "We have 3 sizes." in t for t in thread())  # labelled as the AI's
        # Off now: no more model calls; it waits for a person.
        say(http, sid, "Hello?")
        time.sleep(DELAY * 2)
        assert len(llm.requests()) == 2
        assert pp.sync.run(pp.get_stats()).unanswered == 1
        # The operator hands back from Telegram.
        update = tg.operator_update(1000, "/ai on")
        hook = httpx.post(f"{base}/webhooks/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret})
        assert hook.status_code == 200
        tg.wait_for(lambda: [t for t in thread() if "The AI answers here again." in t])
        llm.script = ["Back again."]
        say(http, sid, "Still there?")
        wait(lambda: [m for m in by(pp, sid, "ai") if m.content == "Back again."], DELAY + 5)


def test_answers_from_the_knowledge_and_hands_over_when_it_does_not_hold_the_answer(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "help").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "faq.md").write_text(
        "---\nurl: https://shop.example/help/returns\n---\n# Returns\n\n## Refunds\n\n"
        "A refund reaches your card within 5 working days after we receive the parcel.\n\n"
        "## Exchanges\n\nExchanges are free within 30 days.\n"
    )
    (tmp_path / "help" / "delivery.md").write_text("# Delivery\n\nWe deliver across Europe in 2 to 4 days.\n")
    ai = responder(llm, knowledge=["docs/faq.md", "help/*.md"])
    assert ai.knowledge is not None and len(ai.knowledge.passages) == 3
    pp = make_pp(tmp_path, ai)
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        say(http, sid, "How long does a refund take?")
        answer = wait(lambda: by(pp, sid, "ai"), DELAY + 5)[0]
        system = system_text(llm.requests()[0])
        assert "[1] Returns › Refunds\nURL: https://shop.example/help/returns" in system
        assert "within 5 working days" in system and "Europe" not in system.split("[1]", 1)[1].split("[2]")[0]
        assert answer.content == "From our docs (Returns › Refunds): see the passage."
        say(http, sid, "Can I pay with bitcoin?")
        wait(lambda: by(pp, sid, "system"), DELAY + 5)
        assert "none of the site's documents match" in system_text(llm.requests()[1])
        assert pp.sync.run(pp.ai.state(sid)).reason == "the documents do not cover this"  # type: ignore[union-attr]
    (tmp_path / "help" / "payment.md").write_text("# Payment\n\nWe take cards and bank transfers.\n")
    assert pp.sync.run(pp.ai.reload()) == 4  # type: ignore[union-attr]


def test_endpoint_errors_are_retried_then_handed_over_silently(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pp = make_pp(tmp_path, responder(llm))
    base = serve(pp)
    caplog.set_level(logging.INFO, "pocketping")
    with httpx.Client(base_url=base) as http:
        # A malformed answer, then a wrong tool call, then a good answer: two retries.
        llm.script = [MALFORMED, tool_call("refund_now", {"amount": 10}), "Here you go."]
        sid = connect(http)["sessionId"]
        say(http, sid, "Hi")
        wait(lambda: by(pp, sid, "ai"), DELAY + 5)
        assert len(llm.requests()) == 3
        # Three 500s: handed over without a word to the visitor; the operators are told why.
        other = connect(http, visitor_id="visitor-two-0001")["sessionId"]
        llm.fail(3, 500)
        started = time.monotonic()
        say(http, other, "Hello?")
        wait(lambda: not pp.sync.run(pp.ai.state(other)).active, DELAY + 8)  # type: ignore[union-attr]
        print(f"\nai errors: three 500s, handed over silently after {time.monotonic() - started:.2f} s")
        state = pp.sync.run(pp.ai.state(other))  # type: ignore[union-attr]
        assert state.reason is not None and "500" in state.reason
        assert [m.sender for m in pp.sync.get_messages(other)] == ["visitor"]
        assert len(llm.requests()) == 6
    assert KEY not in caplog.text and "model call failed" in caplog.text


def test_a_model_without_tools_and_a_visitor_asking_for_a_person(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    pp = make_pp(tmp_path, responder(llm))
    llm.reject_tools = True
    llm.script = ["Plain answer."]
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        say(http, sid, "What colours are there?")
        wait(lambda: by(pp, sid, "ai"), DELAY + 5)
        assert [r.get("tools") is not None for r in llm.requests()] == [True, False]
        calls = len(llm.requests())
        say(http, sid, "Can I talk to a human please?")
        wait(lambda: by(pp, sid, "system"), DELAY + 5)
        assert len(llm.requests()) == calls  # handed over by the rule, no model call
        assert pp.sync.run(pp.ai.state(sid)).reason == "the visitor asked for a person"  # type: ignore[union-attr]
        other = connect(http, visitor_id="visitor-two-0001")["sessionId"]
        say(http, other, "Je voudrais parler à un conseiller")
        wait(lambda: by(pp, other, "system"), DELAY + 5)


def test_an_answer_pending_at_a_restart_is_given_once_by_the_next_process(llm: FakeOpenAI, tmp_path: Path) -> None:
    first_pp = make_pp(tmp_path, responder(llm, delay=3.0))
    first = LiveServer(mounted(first_pp)).start()
    with httpx.Client(base_url=first.url + "/pocketping") as http:
        sid = connect(http)["sessionId"]
        started = time.monotonic()
        say(http, sid, "Are you there?")
    first.stop()
    stopped = time.monotonic() - started
    assert stopped < 3.0 and llm.requests() == []
    llm.script = ["Yes, here."]
    second_pp = make_pp(tmp_path, responder(llm, delay=3.0))
    second = LiveServer(mounted(second_pp)).start()
    try:
        wait(lambda: by(second_pp, sid, "ai"), 15)
        answered = time.monotonic() - started
        time.sleep(1.0)
        assert len(by(second_pp, sid, "ai")) == 1 and len(llm.requests()) == 1
        print(f"\nai restart: first process stopped +{stopped:.2f} s, the next answered +{answered:.2f} s")
        assert answered >= 2.7
    finally:
        second.stop()


def test_a_shutdown_during_a_model_call_stops_cleanly_and_the_next_process_answers(
    llm: FakeOpenAI, tmp_path: Path
) -> None:
    first_pp = make_pp(tmp_path, responder(llm, delay=0.2))
    first = LiveServer(mounted(first_pp)).start()
    llm.latency = 30.0  # a model that takes its time
    with httpx.Client(base_url=first.url + "/pocketping") as http:
        sid = connect(http)["sessionId"]
        say(http, sid, "Hello?")
    wait(lambda: llm.received == 1, 5)  # the call is in flight
    started = time.monotonic()
    first.stop()
    stopped = time.monotonic() - started
    assert not first.thread.is_alive() and by(first_pp, sid, "ai") == []
    llm.latency = 0.0
    llm.script = ["Sorry for the wait."]
    second_pp = make_pp(tmp_path, responder(llm, delay=0.2))
    second = LiveServer(mounted(second_pp)).start()
    try:
        wait(lambda: by(second_pp, sid, "ai"), 10)
        print(f"\nai shutdown: stopped {stopped:.2f} s after the call began waiting; the next process answered")
        assert stopped < 8 and [m.content for m in by(second_pp, sid, "ai")] == ["Sorry for the wait."]
    finally:
        second.stop()


def test_outside_the_opening_hours_it_answers_at_once(
    llm: FakeOpenAI, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    closed = [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]
    hours = BusinessHours(timezone="Europe/Paris", hours={"mon": "00:00-24:00"}, closed_on=closed)
    pp = make_pp(tmp_path, responder(llm, delay=30), business_hours=hours)
    llm.script = ["We're closed now; a person replies tomorrow."]
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http)["sessionId"]
        started = time.monotonic()
        say(http, sid, "Anyone?")
        wait(lambda: by(pp, sid, "ai"), 5)
        print(f"\nai closed hours: answered after {time.monotonic() - started:.2f} s (delay 30 s)")
    assert "outside its opening hours" in system_text(llm.requests()[0])


def test_an_answer_the_visitor_did_not_see_is_emailed_like_an_operator_reply(
    llm: FakeOpenAI, smtp: tuple[Mailbox, int], serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    box, port = smtp
    notifier = EmailNotifier(
        host="127.0.0.1", port=port, sender="support@example.com", starttls=False, unread_after=0.5
    )
    pp = make_pp(tmp_path, responder(llm), email=notifier, public_url="http://127.0.0.1/pocketping")
    llm.script = ["Your order left yesterday."]
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = connect(http, identity={"id": "u1", "email": "ann@example.org"})["sessionId"]
        started = time.monotonic()
        say(http, sid, "Where is my order?")  # and the visitor leaves: no stream open
        mail = wait(lambda: box.received(), DELAY + 10)[0]
        print(f"\nai e-mail: answer e-mailed to the visitor who left at +{time.monotonic() - started:.2f} s")
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert mail["To"] == "ann@example.org" and "Assistant" in text and "Your order left yesterday." in text


def test_bad_settings_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="base_url"):
        AIResponder(base_url="localhost:11434", model="m")
    with pytest.raises(InvalidInput, match="model"):
        AIResponder(model="")
    with pytest.raises(InvalidInput, match="delay"):
        AIResponder(model="m", delay=-1)
    with pytest.raises(InvalidInput, match="max_replies"):
        AIResponder(model="m", max_replies=0)
    with pytest.raises(InvalidInput, match="does not exist"):
        AIResponder(model="m", knowledge=[str(tmp_path / "missing.md")])
    with pytest.raises(InvalidInput, match="list of file paths"):
        AIResponder(model="m", knowledge="docs/*.md")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="AIResponder"):
        PocketPing(storage=SQLiteStorage(tmp_path / "x.db"), ai="gpt")  # type: ignore[arg-type]
    assert "sk-secret" not in repr(AIResponder(model="m", api_key="sk-secret-key"))
