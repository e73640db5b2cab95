"""E-mail follow-up against a real SMTP server (aiosmtpd on 127.0.0.1): replies a visitor has
not seen are e-mailed once, in one batch; replies seen in an open stream are not; answers by
e-mail come back through ``POST /webhooks/email`` as the visitor's messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketping import EmailNotifier, InvalidInput, PocketPing, SQLiteStorage

from .conftest import LiveServer, SSEReader, connect, mounted, wait
from .receivers import Mailbox

SECRET = "inbound-secret-0123456789"
UNREAD = 1.0


def make_pp(tmp_path: Path, port: int, unread_after: float = UNREAD, **kw: Any) -> PocketPing:
    notifier = EmailNotifier(
        host="127.0.0.1",
        port=port,
        sender="support@example.com",
        starttls=False,
        unread_after=unread_after,
        reply_domain="mail.example.com",
        inbound_secret=SECRET,
    )
    return PocketPing(
        storage=SQLiteStorage(tmp_path / "pp.db"),
        email=notifier,
        rate_limits=None,
        operator_name="Acme",
        public_url="http://127.0.0.1/pocketping",
        allowed_origins=["http://127.0.0.1"],
        **kw,
    )


def visitor(http: httpx.Client, address: str = "ann@example.org", name: str = "Ann") -> str:
    sid: str = connect(http, identity={"id": "u1", "email": address, "name": name})["sessionId"]
    assert http.post("/message", json={"sessionId": sid, "content": "Is the <pro> plan monthly?"}).status_code == 200
    return sid


def test_unseen_replies_are_emailed_once_in_one_batch(
    smtp: tuple[Mailbox, int], serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    box, port = smtp
    pp = make_pp(tmp_path, port)
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = visitor(http)
        started = time.monotonic()
        pp.sync.send_message(sid, content="Yes: <b>monthly</b> & yearly.")
        time.sleep(0.5)
        second = time.monotonic()
        pp.sync.send_message(sid, content="Anything else?")
        got = wait(lambda: box.received(), 10)
        sent_at = box.messages[0][0]
        time.sleep(UNREAD * 2)  # nothing more is sent for this batch
        assert len(box.received()) == 1
    msg = got[0]
    print(
        f"\nemail timeline: replies at +0.00 s and +{second - started:.2f} s, e-mail sent at +{sent_at - started:.2f} s"
    )
    # Sent once no reply had come for unread_after seconds: after the second reply, not the first.
    assert sent_at - second >= UNREAD * 0.9 and sent_at - started < UNREAD + 5
    assert msg["To"] == "ann@example.org"
    assert msg["From"].addresses[0].addr_spec == "support@example.com"
    assert msg["Subject"] == "Your conversation with Acme"
    token = msg["Reply-To"].addresses[0].username.split("+", 1)[1]
    assert len(token) == 32 and msg["Message-ID"] == f"<{token}.1@example.com>"
    assert f"/email/unsubscribe/{token}" in msg["List-Unsubscribe"] and msg["List-Unsubscribe-Post"]
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    markup = msg.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "Yes: <b>monthly</b> & yearly." in text and "Anything else?" in text and "Hello Ann," in text
    assert "Yes: &lt;b&gt;monthly&lt;/b&gt; &amp; yearly." in markup and "<b>monthly</b>" not in markup
    assert "Is the &lt;pro&gt; plan monthly?" in markup  # the earlier message, for context
    assert "http://127.0.0.1/pricing" in text  # the page the conversation started on

    # A later reply: the same thread.
    pp.sync.send_message(sid, content="Following up.")
    wait(lambda: len(box.received()) == 2, 10)
    later = box.received()[1]
    assert later["Subject"] == msg["Subject"]
    assert later["In-Reply-To"] == msg["Message-ID"] and msg["Message-ID"] in later["References"]
    assert "Following up." in later.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    # Only the new reply is new; the batch already e-mailed is context now.
    assert "You have a new reply" in later.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]


def test_a_reply_seen_in_an_open_stream_or_read_is_not_emailed(
    smtp: tuple[Mailbox, int], serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    box, port = smtp
    pp = make_pp(tmp_path, port)
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        reading = visitor(http)
        sse = SSEReader(f"{base}/stream?sessionId={reading}")
        try:
            wait(lambda: pp.hub.count(reading) > 0)
            seen = pp.sync.send_message(reading, content="You are still here")
            # The stream replays the visitor's own message first, then pushes the reply.
            ids = [sse.next(timeout=3, type="message")["json"]["data"]["id"] for _ in range(2)]
            assert ids[-1] == seen.id
        finally:
            sse.close()
        other = connect(http, visitor_id="visitor-two-0001", identity={"id": "u2", "email": "bo@example.org"})
        read_one = pp.sync.send_message(other["sessionId"], content="Read in the widget")
        assert (
            http.post(
                "/read", json={"sessionId": other["sessionId"], "messageIds": [read_one.id], "status": "read"}
            ).status_code
            == 200
        )
        time.sleep(UNREAD * 3)
        assert box.received() == []
        assert pp.sync.get_messages(reading)[-1].status == "delivered"


def test_a_reply_by_email_is_stored_as_the_visitors_message(
    smtp: tuple[Mailbox, int], serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    box, port = smtp
    pp = make_pp(tmp_path, port)
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = visitor(http)
        pp.sync.send_message(sid, content="Which plan do you use?")
        out = wait(lambda: box.received(), 10)[0]
        pp.sync.close_session(sid)
        raw = (
            f"From: Ann <ann@example.org>\r\nTo: {out['Reply-To']}\r\nSubject: Re: {out['Subject']}\r\n"
            f"In-Reply-To: {out['Message-ID']}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "The pro plan, thanks!\r\n\r\nOn Wed, Dec 2, 2026 at 10:00 AM Acme <support@example.com> wrote:\r\n"
            "> Which plan do you use?\r\n"
        ).encode()
        hook = "/webhooks/email"
        rfc822 = {"Content-Type": "message/rfc822"}
        auth = {**rfc822, "Authorization": f"Bearer {SECRET}"}
        r = http.post(hook, content=raw, headers=auth)
        assert r.status_code == 200, r.text
        stored = pp.sync.get_messages(sid)[-1]
        assert stored.sender == "visitor" and stored.content == "The pro plan, thanks!"
        assert stored.metadata == {"source": "email"}
        assert pp.sync.get_session(sid).status == "active"  # reopened

        # What is refused, each with a JSON answer; nothing more is stored.
        before = len(pp.sync.get_messages(sid))
        assert http.post(hook, content=raw, headers=rfc822).status_code == 401
        assert http.post(hook, content=raw, headers={**rfc822, "Authorization": "Bearer wrong"}).json()["error"]
        unknown = raw.replace(out["Reply-To"].addresses[0].username.encode(), b"reply+" + b"0" * 32)
        unknown = unknown.replace(str(out["Message-ID"]).encode(), b"<x@y>")
        assert http.post(hook, content=unknown, headers=auth).status_code == 404
        bad = http.post(hook, content=b"no headers here at all", headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]
        big = http.post(hook, content=raw + b"x" * (10 * 1024 * 1024), headers=auth)
        assert big.status_code == 413
        assert len(pp.sync.get_messages(sid)) == before

        # HTML only: stored as text.
        html_mail = (
            f"From: ann@example.org\r\nTo: {out['Reply-To']}\r\nSubject: Re\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Also <b>one</b> more &amp; last</p>"
            "<blockquote><p>old</p></blockquote>\r\n"
        ).encode()
        assert http.post(hook, content=html_mail, headers=auth).status_code == 200
        assert pp.sync.get_messages(sid)[-1].content == "Also one more & last"

        # The unsubscribe link: no more e-mails for this visitor.
        link = str(out["List-Unsubscribe"]).split("<", 1)[1].split(">", 1)[0]
        path = "/email/unsubscribe/" + link.rsplit("/", 1)[1]
        assert "Unsubscribe" in http.get(path).text
        assert http.post(path, content=b"List-Unsubscribe=One-Click").status_code == 200
        count = len(box.received())
        pp.sync.send_message(sid, content="Are you there?")
        time.sleep(UNREAD * 3)
        assert len(box.received()) == count


def test_a_reply_by_email_reaches_the_operators_telegram_thread(
    smtp: tuple[Mailbox, int], tg: Any, serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    from pocketping.bridges import TelegramBridge

    from .fakes.harness import fast
    from .fakes.telegram import CHAT_ID

    box, port = smtp
    bridge = fast(TelegramBridge(tg.token, CHAT_ID, webhook_secret="tg-secret-0123", api_base=tg.url))
    pp = make_pp(tmp_path, port, bridges=[bridge])
    base = serve(pp)

    def thread_texts() -> list[str]:
        return [b["text"] for b in tg.sent("sendMessage") if b.get("message_thread_id") == 1000]

    with httpx.Client(base_url=base) as http:
        sid = visitor(http)
        tg.wait_for(lambda: [t for t in thread_texts() if "plan monthly" in t])
        pp.sync.send_message(sid, content="Which plan do you use?")
        out = wait(lambda: box.received(), 10)[0]
        raw = (
            f"From: Ann <ann@example.org>\r\nTo: {out['Reply-To']}\r\nSubject: Re: {out['Subject']}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nThe yearly one, by e-mail.\r\n\r\n"
            "On Wed, Dec 2, 2026 at 10:00 AM Acme <support@example.com> wrote:\r\n> Which plan do you use?\r\n"
        ).encode()
        started = time.monotonic()
        r = http.post(
            "/webhooks/email",
            content=raw,
            headers={"Content-Type": "message/rfc822", "Authorization": f"Bearer {SECRET}"},
        )
        assert r.status_code == 200, r.text
        posted = tg.wait_for(lambda: [t for t in thread_texts() if "The yearly one, by e-mail." in t])
        elapsed = time.monotonic() - started
    print(f"\nemail to telegram: reply by e-mail accepted, in the operators' thread after {elapsed:.2f} s")
    assert len(posted) == 1 and "Which plan do you use?" not in posted[0]  # the quoted history is stripped
    assert pp.sync.get_messages(sid)[-1].metadata == {"source": "email"}


def test_bad_settings_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="sender"):
        EmailNotifier(host="smtp.example.com", sender="not an address")
    with pytest.raises(InvalidInput, match="inbound_secret"):
        EmailNotifier(host="smtp.example.com", sender="a@example.com", reply_domain="mail.example.com")
    with pytest.raises(InvalidInput, match="username and password"):
        EmailNotifier(host="smtp.example.com", sender="a@example.com", username="u")
    with pytest.raises(InvalidInput, match="public_url"):
        PocketPing(storage=SQLiteStorage(tmp_path / "x.db"), email=EmailNotifier(host="h", sender="a@example.com"))
    notifier = EmailNotifier(host="h", sender="a@example.com", username="u", password="hunter2-secret")
    assert "hunter2" not in repr(notifier)


def test_an_smtp_failure_is_retried_and_the_batch_sent_once(
    smtp: tuple[Mailbox, int], serve: Callable[[PocketPing], str], tmp_path: Path
) -> None:
    box, port = smtp
    box.refuse(2)
    pp = make_pp(tmp_path, port)
    assert pp.email is not None
    pp.email.retry_schedule = (0.3, 0.3, 0.3)
    base = serve(pp)
    with httpx.Client(base_url=base) as http:
        sid = visitor(http)
        pp.sync.send_message(sid, content="Sorry for the wait")
        wait(lambda: box.received(), 15)
        time.sleep(1.0)
    assert box.refused == 2 and len(box.received()) == 1


def test_an_email_due_later_survives_a_restart_and_is_sent_once(smtp: tuple[Mailbox, int], tmp_path: Path) -> None:
    box, port = smtp
    before = make_pp(tmp_path, port, unread_after=3.0)
    first = LiveServer(mounted(before)).start()
    with httpx.Client(base_url=first.url + "/pocketping") as http:
        sid = visitor(http)
        started = time.monotonic()
        http.post("/message", json={"sessionId": sid, "content": "hello?"})
        before.sync.send_message(sid, content="Replied just before a restart")
    first.stop()  # the process stops before the e-mail is due
    stopped = time.monotonic() - started
    assert stopped < 3.0 and box.received() == []
    second = LiveServer(mounted(make_pp(tmp_path, port, unread_after=3.0))).start()
    try:
        got = wait(lambda: box.received(), 15)
        sent = time.monotonic() - started
        time.sleep(1.0)
        body = got[0].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert len(box.received()) == 1 and "Replied just before a restart" in body
        print(f"\nemail restart: first process stopped at +{stopped:.2f} s, e-mail sent by the next at +{sent:.2f} s")
        assert sent >= 2.7
    finally:
        second.stop()
