"""Fault soak: visitors send and receive for a fixed time while the server process is killed
(SIGKILL) and restarted, its PostgreSQL connections are cut (``pg_terminate_backend``), the
Discord fake answers 500 and 429, the webhook receiver 500 and the SMTP server 451. Everything
on 127.0.0.1, bounded in time and count.

Afterwards:

* every visitor message acknowledged (200 with a ``messageId``) is stored exactly once, and
  every stored visitor message reached the platform exactly once;
* every stored operator reply (``pp.send_message``, acknowledged or not) reached its visitor's
  SSE stream exactly once, the stream reconnecting with ``Last-Event-ID`` as the widget does;
* every stored message reached the webhook receiver (which verifies with ``standardwebhooks``
  and deduplicates by ``webhook-id``) as exactly one accepted ``message.created`` event, and
  every session as one ``session.started``;
* every operator reply to the visitors who left (no stream, an e-mail address) was e-mailed as
  a new reply in exactly one batch, and no batch (Message-ID) reached the SMTP server twice.

The counts are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import services
from .fakes.discord import CHANNEL, FakeDiscord
from .receivers import Mailbox, Receiver
from .services import AppProcess, stop_pid

VISITORS = 10
EMAIL_VISITORS = 3  # left the page: no stream, replies e-mailed
UNREAD_AFTER = 1.0
LOAD_SECONDS = 40.0
SEND_EVERY = 0.25  # per visitor
REPLY_EVERY = 0.3  # operator replies, all visitors together
HEADERS = {"X-PocketPing-Version": "2.6.0"}
VISITOR_TEXT = re.compile(r"soak-v\d+-m\d+")
REPLY_TEXT = re.compile(r"soak-op-\d+")


class Server:
    """The soak app in a child process; ``kill()`` and ``start()`` keep its port."""

    def __init__(self, tmp: Path, dsn: str, discord: FakeDiscord, receiver: Receiver, smtp_port: int) -> None:
        env = {
            "PP_DSN": dsn,
            "PP_DISCORD_API": f"{discord.url}/api/v10",
            "PP_DISCORD_TOKEN": discord.token,
            "PP_DISCORD_CHANNEL": CHANNEL,
            "PP_WEBHOOK_URL": receiver.url,
            "PP_WEBHOOK_SECRET": receiver.secret,
            "PP_SMTP_PORT": str(smtp_port),
            "PP_UNREAD_AFTER": str(UNREAD_AFTER),
        }
        self.proc = AppProcess("tests.apps.soak_app:app", env, tmp)
        self.base = self.proc.url + "/pocketping"

    def kill(self) -> None:
        stop_pid(self.proc.proc, signal.SIGKILL)

    def start(self) -> None:
        self.proc.start()


class Visitor:
    """Sends messages (each attempt with its own text) and reads its SSE stream, reconnecting
    with ``Last-Event-ID`` after every drop."""

    def __init__(self, n: int, server: Server, stop: threading.Event, email: str | None = None) -> None:
        self.n = n
        self.email = email
        self.server = server
        self.stop = stop
        self.session_id = ""
        self.acked: dict[str, str] = {}  # text -> message id
        self.unacked: list[str] = []
        self.received: Counter[str] = Counter()  # operator message id -> times pushed
        self.last_event_id: str | None = None
        self.reconnects = 0

    def connect(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                body: dict[str, Any] = {"visitorId": f"soak-visitor-{self.n}", "sessionId": self.session_id or None}
                if self.email:
                    body["identity"] = {"id": f"soak-user-{self.n}", "email": self.email}
                r = httpx.post(
                    self.server.base + "/connect",
                    json=body,
                    headers=HEADERS,
                    timeout=5,
                )
                if r.status_code == 200:
                    self.session_id = r.json()["sessionId"]
                    return
            time.sleep(0.2)
        raise AssertionError(f"visitor {self.n} could not connect")

    def send_loop(self) -> None:
        i = 0
        with httpx.Client(base_url=self.server.base, headers=HEADERS, timeout=5) as http:
            while not self.stop.is_set():
                text = f"soak-v{self.n}-m{i}"
                i += 1
                try:
                    r = http.post("/message", json={"sessionId": self.session_id, "content": text})
                    if r.status_code == 200 and "messageId" in r.json():
                        self.acked[text] = r.json()["messageId"]
                    else:
                        self.unacked.append(text)
                except (httpx.HTTPError, ValueError):
                    self.unacked.append(text)
                self.stop.wait(SEND_EVERY)

    def stream_loop(self, until: threading.Event) -> None:
        while not until.is_set():
            headers = dict(HEADERS)
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            try:
                with httpx.stream(
                    "GET",
                    self.server.base + "/stream",
                    params={"sessionId": self.session_id},
                    headers=headers,
                    timeout=httpx.Timeout(5.0, read=3.0),
                ) as r:
                    if r.status_code != 200:
                        raise httpx.HTTPError(f"stream answered {r.status_code}")
                    self._read(r, until)
            except (httpx.HTTPError, ValueError):
                pass
            if not until.is_set():
                self.reconnects += 1
                until.wait(0.2)

    def _read(self, r: httpx.Response, until: threading.Event) -> None:
        event_id, data = None, []
        for line in r.iter_lines():
            if until.is_set():
                return
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                frame = json.loads("\n".join(data))
                if frame.get("type") == "message" and frame["data"].get("sender") == "operator":
                    self.received[frame["data"]["id"]] += 1
                if event_id:
                    self.last_event_id = event_id
                event_id, data = None, []


def operator_loop(server: Server, visitors: list[Visitor], stop: threading.Event, acked: list[str]) -> None:
    rng = random.Random(7)
    k = 0
    with httpx.Client(base_url=server.proc.url, timeout=5) as http:
        while not stop.is_set():
            v = rng.choice(visitors)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = http.post("/test/send", json={"sessionId": v.session_id, "content": f"soak-op-{k}"})
                if r.status_code == 200:
                    acked.append(r.json()["id"])
            k += 1
            stop.wait(REPLY_EVERY)


def faults(
    server: Server,
    dsn_name: str,
    discord: FakeDiscord,
    receiver: Receiver,
    mailbox: Mailbox,
    stop: threading.Event,
    log: list[str],
) -> None:
    """The fault schedule: (seconds after the start, what)."""
    plan = [
        (6.0, "kill"),
        (9.0, "webhook-500"),
        (11.0, "cut-db"),
        (13.0, "smtp-451"),
        (15.0, "platform-500"),
        (19.0, "platform-429"),
        (21.0, "webhook-500"),
        (23.0, "kill"),
        (26.0, "smtp-451"),
        (28.0, "cut-db"),
        (31.0, "platform-500"),
        (34.0, "kill"),
    ]
    t0 = time.monotonic()
    for at, what in plan:
        if stop.wait(max(0.0, at - (time.monotonic() - t0))):
            return
        if what == "kill":
            server.kill()
            time.sleep(0.3)
            server.start()
        elif what == "cut-db":
            services.shared_postgres().execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dsn_name,),
            )
        elif what == "webhook-500":
            with receiver.lock:
                receiver.answers = [500] * 6
        elif what == "smtp-451":
            mailbox.refuse(2)
        elif what == "platform-500":
            discord.fail(6, 500)
        else:
            discord.fail(6, 429, retry_after=0.3)
        log.append(what)


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return bool(predicate())


@pytest.fixture
def discord() -> Any:
    fake = FakeDiscord()
    fake.start()
    yield fake
    fake.stop()


def new_replies(mail: Any) -> list[str]:
    """The replies an e-mail gives as new (the earlier messages it quotes for context are not)."""
    text = mail.get_body(preferencelist=("plain",)).get_content()
    return REPLY_TEXT.findall(text.split("Earlier in the conversation:")[0])


def test_nothing_is_lost_or_duplicated_under_faults(
    tmp_path: Path, discord: FakeDiscord, receiver: Receiver, smtp: tuple[Mailbox, int]
) -> None:
    dsn = services.fresh_database()
    dbname = dsn.rsplit("/", 1)[-1].split("?")[0]
    mailbox, smtp_port = smtp
    server = Server(tmp_path, dsn, discord, receiver, smtp_port)
    server.start()
    stop_load, stop_streams = threading.Event(), threading.Event()
    visitors = [Visitor(n, server, stop_load) for n in range(VISITORS)]
    gone = [Visitor(VISITORS + n, server, stop_load, email=f"left-{n}@example.org") for n in range(EMAIL_VISITORS)]
    threads: list[threading.Thread] = []
    operator_acked: list[str] = []
    injected: list[str] = []
    try:
        for v in [*visitors, *gone]:
            v.connect()
        for v in visitors:
            threads.append(threading.Thread(target=v.stream_loop, args=(stop_streams,), daemon=True))
            threads.append(threading.Thread(target=v.send_loop, daemon=True))
        threads.append(
            threading.Thread(
                target=operator_loop, args=(server, [*visitors, *gone], stop_load, operator_acked), daemon=True
            )
        )
        fault_thread = threading.Thread(
            target=faults, args=(server, dbname, discord, receiver, mailbox, stop_load, injected)
        )
        for t in [*threads, fault_thread]:
            t.start()
        time.sleep(LOAD_SECONDS)
        stop_load.set()
        fault_thread.join(60)

        def stored(sender: str) -> list[tuple[str, str, str]]:
            rows = services.shared_postgres().execute(
                "SELECT session_id, id, content FROM pocketping_messages WHERE sender = %s", (sender,), dbname=dbname
            )
            return [(r[0], r[1], r[2]) for r in rows]

        def posted() -> Counter[str]:
            """Messages the platform holds (a retried post with the same nonce is not a new one)."""
            texts = [m.get("content", "") for m in list(discord.messages.values())]
            return Counter(found for text in texts for found in VISITOR_TEXT.findall(text.replace("\\", "")))

        visitor_rows = stored("visitor")
        # The bridge catches up (retries, restarts): every stored message reaches the platform.
        wait_until(lambda: len(posted()) >= len(visitor_rows), 90)
        operator_rows = stored("operator")
        by_session: dict[str, set[str]] = {}
        for sid, mid, _ in operator_rows:
            by_session.setdefault(sid, set()).add(mid)

        def streams_caught_up() -> bool:
            return all(by_session.get(v.session_id, set()) <= set(v.received) for v in visitors)

        wait_until(streams_caught_up, 30)
        stop_streams.set()
        for t in threads:
            t.join(10)

        all_rows = visitor_rows + operator_rows

        def created() -> Counter[str]:
            """Accepted ``message.created`` events, by message id."""
            return Counter(e["data"]["message"]["id"] for e in receiver.events() if e["type"] == "message.created")

        wait_until(lambda: set(created()) >= {mid for _, mid, _ in all_rows}, 60)
        gone_sessions = {v.session_id for v in gone}
        to_email = Counter(text for sid, _, text in operator_rows if sid in gone_sessions)

        def emailed() -> Counter[str]:
            """Replies given as new, over the distinct batches (Message-IDs) that arrived."""
            batches = {str(m["Message-ID"]): m for m in mailbox.received()}
            return Counter(reply for m in batches.values() for reply in new_replies(m))

        wait_until(lambda: set(emailed()) >= set(to_email), 60)
        on_hook = created()
        started_events = Counter(
            e["data"]["session"]["id"] for e in receiver.events() if e["type"] == "session.started"
        )
        hooks_missing = [mid for _, mid, _ in all_rows if on_hook[mid] == 0]
        hooks_duplicated = [mid for mid, n in on_hook.items() if n > 1]
        with receiver.lock:
            attempts = list(receiver.attempts)
        tries = Counter(webhook_id for _, webhook_id, _ in attempts)
        in_mail = emailed()
        emails_missing = [t for t in to_email if in_mail[t] == 0]
        emails_duplicated = [t for t, n in in_mail.items() if n > 1]
        batches_resent = [i for i, n in mailbox.message_ids().items() if n > 1]

        stored_texts = Counter(text for _, _, text in visitor_rows)
        acked = {text: mid for v in visitors for text, mid in v.acked.items()}
        unacked = [text for v in visitors for text in v.unacked]
        on_platform = posted()
        lost = [t for t in acked if stored_texts[t] == 0]
        duplicated = [t for t, n in stored_texts.items() if n > 1]
        platform_missing = [t for t in stored_texts if on_platform[t] == 0]
        platform_duplicated = [t for t, n in on_platform.items() if n > 1]
        stored_operator = {mid for _, mid, _ in operator_rows}
        received = Counter()
        for v in visitors:
            received.update(v.received)
        streamed = {mid for sid, mid, _ in operator_rows if sid not in gone_sessions}
        replies_lost = [mid for mid in streamed if received[mid] == 0]
        replies_duplicated = [mid for mid, n in received.items() if n > 1]
        acked_replies_unstored = [mid for mid in operator_acked if mid not in stored_operator]
        print(
            "\nsoak:",
            json.dumps(
                {
                    "seconds": LOAD_SECONDS,
                    "visitors": VISITORS,
                    "faults_injected": dict(Counter(injected)),
                    "visitor_messages": {
                        "sent": len(acked) + len(unacked),
                        "acknowledged": len(acked),
                        "unacknowledged": len(unacked),
                        "unacknowledged_but_stored": sum(1 for t in unacked if stored_texts[t]),
                        "stored": len(visitor_rows),
                        "lost": len(lost),
                        "duplicated": len(duplicated),
                        "on_platform": sum(on_platform.values()),
                        "platform_missing": len(platform_missing),
                        "platform_duplicated": len(platform_duplicated),
                    },
                    "operator_replies": {
                        "acknowledged": len(operator_acked),
                        "stored": len(stored_operator),
                        "to_open_streams": len(streamed),
                        "delivered_to_streams": len([m for m in streamed if received[m] == 1]),
                        "lost": len(replies_lost),
                        "duplicated": len(replies_duplicated),
                    },
                    "webhooks": {
                        "messages_stored": len(all_rows),
                        "accepted_message_created": sum(on_hook.values()),
                        "missing": len(hooks_missing),
                        "duplicated": len(hooks_duplicated),
                        "events_accepted": len(receiver.events()),
                        "attempts": len(attempts),
                        "ids_retried": sum(1 for n in tries.values() if n > 1),
                        "rejected_signatures": receiver.rejected,
                    },
                    "email": {
                        "replies_to_visitors_who_left": sum(to_email.values()),
                        "batches_received": len(mailbox.message_ids()),
                        "replies_emailed": sum(in_mail.values()),
                        "missing": len(emails_missing),
                        "duplicated": len(emails_duplicated),
                        "batches_resent": len(batches_resent),
                        "refused_451": mailbox.refused,
                    },
                    "stream_reconnects": sum(v.reconnects for v in visitors),
                }
            ),
        )
        assert Counter(injected) == {
            "kill": 3,
            "cut-db": 2,
            "platform-500": 2,
            "platform-429": 1,
            "webhook-500": 2,
            "smtp-451": 2,
        }
        assert len(acked) > 500  # the load really ran
        assert lost == [] and duplicated == []
        assert platform_missing == [] and platform_duplicated == []
        assert acked_replies_unstored == []
        assert len(operator_acked) > 50
        assert replies_lost == [] and replies_duplicated == []
        assert hooks_missing == [] and hooks_duplicated == [] and receiver.rejected == 0
        assert sorted(started_events) == sorted(v.session_id for v in [*visitors, *gone])
        assert set(started_events.values()) == {1}
        assert any(n > 1 for n in tries.values())  # the 500s were retried with the same id
        assert sum(to_email.values()) > 10 and emails_missing == [] and emails_duplicated == []
        assert batches_resent == []
    finally:
        stop_load.set()
        stop_streams.set()
        server.proc.stop()
