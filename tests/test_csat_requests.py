"""Rating requests: ``pp.request_csat`` and the bridges' rate command push ``csat_request`` to
the visitor's open stream; the rating is stored once and shown in the operators' thread."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from pocketping import MemoryStorage, PocketPing
from pocketping.testing import FakeBridge

from .conftest import SSEReader, connect


def test_a_rating_request_reaches_the_widget_and_the_answer_the_thread(serve: Callable[[PocketPing], str]) -> None:
    fake = FakeBridge()
    events: list[str] = []
    pp = PocketPing(storage=MemoryStorage(), bridges=[fake], on_event=lambda s, e: events.append(e.name))
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = connect(http)["sessionId"]
        stream = SSEReader(f"{base}/stream?sessionId={sid}")
        try:
            asked = pp.sync.request_csat(sid)
            frame = stream.next(timeout=5, type="csat_request")["json"]["data"]
            assert frame["requestedAt"].endswith("Z") and frame["sessionId"] == sid
            assert pp.sync.get_session(sid).data["csat_requested_at"].startswith(asked.strftime("%Y-%m-%dT%H:%M"))
            # From the operators' thread: the rate command asks again.
            pp.sync.run(fake.reply(sid, f"{fake.command_prefix}rate"))
            assert stream.next(timeout=5, type="csat_request")["json"]["type"] == "csat_request"
        finally:
            stream.close()
        r = http.post("/csat", json={"sessionId": sid, "score": 4, "comment": "Quick <b>and</b> kind"})
        assert r.status_code == 200
        again = http.post("/csat", json={"sessionId": sid, "score": 1})
        assert again.status_code == 200
        assert pp.sync.get_session(sid).data["csat"] == {"score": 4, "comment": "Quick <b>and</b> kind"}
        assert pp.sync.run(fake.delivered())
        texts = fake.texts(sid)
        assert any("Rating requested" in t for t in texts)
        rated = [t for t in texts if "Rated" in t]
        assert len(rated) == 1 and "Rated 4/5" in rated[0] and "Quick <b>and</b> kind" in rated[0]
    assert pp.sync.run(pp.hooks.join(5)) and events == ["csat"]
