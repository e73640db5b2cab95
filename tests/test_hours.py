"""Opening hours: ranges, closed days, daylight-saving changes, and what the widget is told
outside them (``operatorReachable: false``, the offline message once per session)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import httpx
import pytest

from pocketping import BusinessHours, InvalidInput, MemoryStorage, PocketPing
from pocketping.hours import DAYS

PARIS_WEEK = {
    "mon": "09:00-18:00",
    "tue": "09:00-18:00",
    "wed": "09:00-12:00,14:00-18:00",
    "thu": "09:00-18:00",
    "fri": "09:00-18:00",
    "sat": "10:00-14:00",
}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_ranges_days_and_holidays() -> None:
    hours = BusinessHours(timezone="Europe/Paris", hours=PARIS_WEEK, closed_on=["2026-12-25", date(2026, 12, 31)])
    # Wednesday 2 December 2026, Paris is UTC+1.
    assert not hours.is_open(utc("2026-12-02T07:59:00"))  # 08:59
    assert hours.is_open(utc("2026-12-02T08:00:00"))  # 09:00
    assert not hours.is_open(utc("2026-12-02T11:30:00"))  # 12:30, the lunch break
    assert hours.is_open(utc("2026-12-02T13:00:00"))  # 14:00
    assert not hours.is_open(utc("2026-12-02T17:00:00"))  # 18:00: ranges end before their end time
    assert not hours.is_open(utc("2026-12-06T10:00:00"))  # Sunday: left out, closed
    assert not hours.is_open(utc("2026-12-25T10:00:00"))  # Friday, a holiday
    assert not hours.is_open(datetime(2026, 12, 31, 10, 0))  # naive: UTC
    assert hours.next_open(utc("2026-12-24T17:30:00")) == utc("2026-12-26T09:00:00")  # Sat 10:00 Paris
    whole = BusinessHours(timezone="UTC", hours={"monday": "00:00-24:00"})
    assert whole.is_open(utc("2026-11-30T00:00:00")) and whole.is_open(utc("2026-11-30T23:59:59"))
    assert not whole.is_open(utc("2026-12-01T00:00:00"))
    assert BusinessHours(timezone="UTC", hours={}).next_open() is None


def test_hours_follow_the_clocks_across_daylight_saving_changes() -> None:
    hours = BusinessHours(timezone="Europe/Paris", hours={d: "09:00-18:00" for d in ("fri", "sat", "sun", "mon")})
    # Clocks go forward on Sunday 29 March 2026 (UTC+1 -> UTC+2) and back on 25 October.
    assert hours.is_open(utc("2026-03-28T08:00:00"))  # Saturday 09:00 CET
    assert not hours.is_open(utc("2026-03-30T06:30:00"))  # Monday 08:30 CEST
    assert hours.is_open(utc("2026-03-30T07:00:00"))  # Monday 09:00 CEST
    assert hours.is_open(utc("2026-03-29T15:59:00"))  # Sunday 17:59 CEST
    assert not hours.is_open(utc("2026-03-29T16:00:00"))  # Sunday 18:00 CEST
    assert hours.is_open(utc("2026-10-24T07:00:00"))  # Saturday 09:00 CEST
    assert not hours.is_open(utc("2026-10-26T07:30:00"))  # Monday 08:30 CET
    assert hours.is_open(utc("2026-10-26T08:00:00"))  # Monday 09:00 CET
    assert hours.next_open(utc("2026-03-29T17:00:00")) == utc("2026-03-30T07:00:00")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"timezone": "Mars/Olympus", "hours": {}}, "Mars/Olympus"),
        ({"timezone": "UTC", "hours": {"funday": "09:00-18:00"}}, "funday"),
        ({"timezone": "UTC", "hours": {"mon": "9-18"}}, "'9-18'"),
        ({"timezone": "UTC", "hours": {"mon": "18:00-09:00"}}, "ends before it starts"),
        ({"timezone": "UTC", "hours": {"mon": "09:00-25:00"}}, "09:00-25:00"),
        ({"timezone": "UTC", "hours": {"mon": "09:00-13:00,12:00-18:00"}}, "overlap"),
        ({"timezone": "UTC", "hours": {"mon": "09:00-18:00"}, "closed_on": ["25/12/2026"]}, "25/12/2026"),
    ],
)
def test_bad_settings_name_what_is_wrong(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidInput, match=named.replace("(", r"\(")):
        BusinessHours(**kwargs)  # type: ignore[arg-type]


def connect(http: httpx.Client, visitor: str) -> dict[str, object]:
    r = http.post("/connect", json={"visitorId": visitor, "sessionId": None})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_outside_the_hours_the_widget_offers_to_leave_a_message(serve: Callable[[PocketPing], str]) -> None:
    closed = BusinessHours(timezone="Europe/Paris", hours={})  # never open
    pp = PocketPing(storage=MemoryStorage(), business_hours=closed, offline_message="We're away; we'll e-mail you.")
    base = serve(pp)
    with httpx.Client(base_url=base, timeout=10) as http:
        body = connect(http, "v-1")
        assert body["operatorReachable"] is False
        sid = str(body["sessionId"])
        for text in ("hello?", "anyone?"):
            assert http.post("/message", json={"sessionId": sid, "content": text}).status_code == 200
        stored = [(m.sender, m.content) for m in pp.sync.get_messages(sid)]
        assert stored == [
            ("visitor", "hello?"),
            ("system", "We're away; we'll e-mail you."),  # once per session
            ("visitor", "anyone?"),
        ]
        assert pp.sync.run(pp.is_open()) is False
        # An operator who comes online is reachable, hours or not.
        pp.sync.set_operator_online(True)
        assert connect(http, "v-2")["operatorReachable"] is True
        sid2 = str(connect(http, "v-2")["sessionId"])
        assert http.post("/message", json={"sessionId": sid2, "content": "hi"}).status_code == 200
        assert [m.sender for m in pp.sync.get_messages(sid2)] == ["visitor"]


def test_within_the_hours_and_without_them_someone_is_reachable(serve: Callable[[PocketPing], str]) -> None:
    always = BusinessHours(timezone="UTC", hours=dict.fromkeys(DAYS, "00:00-24:00"))
    open_pp = PocketPing(storage=MemoryStorage(), business_hours=always, offline_message="away")
    plain = PocketPing(storage=MemoryStorage(), offline_message="away")
    for pp in (open_pp, plain):
        with httpx.Client(base_url=serve(pp), timeout=10) as http:
            body = connect(http, "v")
            assert body["operatorReachable"] is True
            sid = str(body["sessionId"])
            assert http.post("/message", json={"sessionId": sid, "content": "hi"}).status_code == 200
            assert [m.sender for m in pp.sync.get_messages(sid)] == ["visitor"]
            assert pp.sync.run(pp.is_open()) is True
    with pytest.raises(InvalidInput, match="business_hours"):
        PocketPing(storage=MemoryStorage(), business_hours={"mon": "09:00-18:00"})  # type: ignore[arg-type]
