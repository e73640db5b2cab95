"""Conversation statistics: ``await pp.get_stats(since=, until=)``.

The storage aggregates (``conversation_stats``: counts by SQL ``GROUP BY`` on SQLite and
PostgreSQL, one first-response time per conversation rather than every message); this module
turns its figures into :class:`Stats`. Conversations are the sessions started in
``[since, until)``; messages and ratings are counted in the same window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .models import iso, parse_time

#: Senders whose messages count as replies to the visitor.
REPLY_SENDERS = ("operator", "ai")
#: A rating of at least this score counts as satisfied (CSAT: 4 or 5 out of 5).
SATISFIED = 4


def reply_source(sender: str, metadata: dict[str, Any] | None) -> str:
    """Where a reply came from: ``ai``, a bridge's name (``telegram``, ``slack``,
    ``discord``), the ``source`` it was sent with (``console``, ``email``), else ``api``."""
    if sender == "ai":
        return "ai"
    meta = metadata or {}
    for key in ("bridge", "source"):
        if isinstance(meta.get(key), str) and meta[key]:
            return str(meta[key])
    return "api"


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` 0.5: the median) of ``values``, or None."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Stats:
    """What happened in ``[since, until)``; times in seconds, shares from 0 to 1 (None when
    there is nothing to divide)."""

    since: datetime
    until: datetime
    conversations: int = 0
    visitor_messages: int = 0
    replies: dict[str, int] = field(default_factory=dict)
    #: Share of conversations in which the visitor wrote that got a reply.
    response_rate: float | None = None
    first_response_median: float | None = None
    first_response_p90: float | None = None
    #: Active conversations (any age) whose last visitor message has no reply after it.
    unanswered: int = 0
    csat_count: int = 0
    #: Share of ratings of 4 or 5.
    csat_satisfied: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "conversations": self.conversations,
            "visitorMessages": self.visitor_messages,
            "replies": dict(self.replies),
            "responseRate": self.response_rate,
            "firstResponseMedian": self.first_response_median,
            "firstResponseP90": self.first_response_p90,
            "unanswered": self.unanswered,
            "csatCount": self.csat_count,
            "csatSatisfied": self.csat_satisfied,
        }


def window(since: datetime | str | None, until: datetime | str | None) -> tuple[datetime, datetime]:
    """The window asked for: ``until`` defaults to now, ``since`` to 30 days before it."""
    end = parse_time(until) if until is not None else datetime.now(UTC)
    start = parse_time(since) if since is not None else end - timedelta(days=30)
    return start, end


def from_figures(since: datetime, until: datetime, figures: dict[str, Any]) -> Stats:
    """:class:`Stats` from a storage's ``conversation_stats`` answer: ``conversations``,
    ``visitor_messages``, ``replies`` (source → count), ``first_responses`` (one pair of
    first visitor message and first reply after it, in ms, per conversation the visitor wrote
    in; the reply None when there is none), ``unanswered``, ``csat_count``, ``csat_satisfied``."""
    pairs = [(int(v), None if r is None else int(r)) for v, r in figures.get("first_responses", ())]
    waits = [(r - v) / 1000 for v, r in pairs if r is not None]
    csat = int(figures.get("csat_count") or 0)
    return Stats(
        since=since,
        until=until,
        conversations=int(figures.get("conversations") or 0),
        visitor_messages=int(figures.get("visitor_messages") or 0),
        replies={str(k): int(n) for k, n in sorted((figures.get("replies") or {}).items())},
        response_rate=(len(waits) / len(pairs)) if pairs else None,
        first_response_median=percentile(waits, 0.5),
        first_response_p90=percentile(waits, 0.9),
        unanswered=int(figures.get("unanswered") or 0),
        csat_count=csat,
        csat_satisfied=(int(figures.get("csat_satisfied") or 0) / csat) if csat else None,
    )
