"""Opening hours: when someone is expected to answer.

``BusinessHours(timezone="Europe/Paris", hours={"mon": "09:00-18:00", "sat": "10:00-14:00"},
closed_on=["2026-12-25"])``. Hours are wall-clock times in ``timezone`` (read with
:mod:`zoneinfo`), so a daylight-saving change moves them with the clocks: 09:00 is 09:00 local
time in winter and in summer. A day left out of ``hours`` is closed; ``"00:00-24:00"`` is a whole
day; ``"09:00-12:00,14:00-18:00"`` two ranges. ``closed_on`` lists local dates (holidays).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidInput

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

#: (start, end) in minutes after local midnight; end may be 24 * 60.
Span = tuple[int, int]


def _minutes(hh: str, mm: str, text: str, day: str) -> int:
    hours, minutes = int(hh), int(mm)
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise InvalidInput(f"BusinessHours hours[{day!r}]: {text!r} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


def _spans(day: str, text: object) -> tuple[Span, ...]:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"BusinessHours hours[{day!r}] must be ranges such as '09:00-18:00', not {text!r}")
    spans: list[Span] = []
    for part in text.split(","):
        found = _RANGE.match(part.strip())
        if found is None:
            raise InvalidInput(f"BusinessHours hours[{day!r}]: {part.strip()!r} is not a range such as '09:00-18:00'")
        start = _minutes(found.group(1), found.group(2), part.strip(), day)
        end = _minutes(found.group(3), found.group(4), part.strip(), day)
        if end <= start:
            raise InvalidInput(
                f"BusinessHours hours[{day!r}]: {part.strip()!r} ends before it starts "
                "(a range past midnight is two ranges, one on each day)"
            )
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise InvalidInput(f"BusinessHours hours[{day!r}]: ranges overlap in {text!r}")
    return tuple(spans)


def _closed_day(value: object) -> date:
    if isinstance(value, datetime):
        raise InvalidInput(f"BusinessHours closed_on: give dates, not datetimes ({value!r})")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InvalidInput(f"BusinessHours closed_on: {value!r} is not a date such as '2026-12-25'")


class BusinessHours:
    """When operators are expected to answer; see the module docstring."""

    def __init__(self, *, timezone: str, hours: Mapping[str, str], closed_on: Iterable[str | date] = ()) -> None:
        if not isinstance(timezone, str) or not timezone:
            raise InvalidInput("BusinessHours timezone must be an IANA zone name such as 'Europe/Paris'")
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"BusinessHours timezone: {timezone!r} is not a known time zone (an IANA name such as 'Europe/Paris')"
            ) from None
        if not isinstance(hours, Mapping):
            raise InvalidInput("BusinessHours hours must be a mapping such as {'mon': '09:00-18:00'}")
        self.timezone = timezone
        self.week: dict[int, tuple[Span, ...]] = {}
        for day, text in hours.items():
            key = day.strip().lower()[:3] if isinstance(day, str) else None
            if key not in DAYS or not isinstance(day, str) or day.strip().lower() not in (key, _FULL[key]):
                raise InvalidInput(f"BusinessHours hours: {day!r} is not a day (mon, tue, wed, thu, fri, sat, sun)")
            self.week[DAYS.index(key)] = _spans(day, text)
        if isinstance(closed_on, str | date):
            closed_on = [closed_on]
        self.closed_on = frozenset(_closed_day(d) for d in closed_on)

    def __repr__(self) -> str:
        return f"BusinessHours(timezone={self.timezone!r}, days={len(self.week)}, closed_on={len(self.closed_on)})"

    def is_open(self, at: datetime | None = None) -> bool:
        """Whether ``at`` (default now; an aware datetime, or naive UTC) is within the hours."""
        local = _aware(at).astimezone(self.zone)
        if local.date() in self.closed_on:
            return False
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.week.get(local.weekday(), ()))

    def next_open(self, at: datetime | None = None) -> datetime | None:
        """When the hours next begin after ``at`` (``at`` itself when open); None if they
        never do within a year (no hours at all)."""
        moment = _aware(at)
        if self.is_open(moment):
            return moment
        local = moment.astimezone(self.zone)
        for offset in range(0, 367):
            day = local.date() + timedelta(days=offset)
            if day in self.closed_on:
                continue
            for start, _end in self.week.get(day.weekday(), ()):
                begins = datetime.combine(day, _clock(start), self.zone)
                if begins > local:
                    return begins.astimezone(UTC)
        return None


_FULL = {
    "mon": "monday",
    "tue": "tuesday",
    "wed": "wednesday",
    "thu": "thursday",
    "fri": "friday",
    "sat": "saturday",
    "sun": "sunday",
}


def _clock(minutes: int) -> time:
    return time(minutes // 60, minutes % 60) if minutes < 24 * 60 else time(23, 59, 59)


def _aware(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime):
        raise InvalidInput(f"at must be a datetime, not {type(at).__name__}")
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
