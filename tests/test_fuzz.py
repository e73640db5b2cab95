"""Property tests: whatever JSON a client sends, the answer is a JSON 2xx/4xx, never a 5xx;
and timestamps round-trip exactly through the wire format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketping.models import iso, parse_time

from .conftest import connect

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
KEYS = [
    "sessionId",
    "visitorId",
    "content",
    "sender",
    "attachmentIds",
    "replyTo",
    "messageIds",
    "status",
    "identity",
    "score",
    "email",
    "phone",
    "isTyping",
    "metadata",
    "filename",
    "mimeType",
    "size",
]
bodies = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6) | json_values
ENDPOINTS = [
    "/connect",
    "/message",
    "/typing",
    "/read",
    "/identify",
    "/prechat",
    "/csat",
    "/disconnect",
    "/visibility",
    "/upload",
    "/upload/complete",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ENDPOINTS), body=bodies, use_real_session=st.booleans())
def test_any_json_body_gets_a_json_answer_below_500(
    http: httpx.Client, path: str, body: Any, use_real_session: bool
) -> None:
    if use_real_session and isinstance(body, dict) and "sessionId" in body:
        body["sessionId"] = connect(http)["sessionId"]
    r = http.post(path, json=body)
    assert r.status_code < 500, r.text
    assert isinstance(r.json(), dict)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)))
def test_wire_timestamps_round_trip(dt: datetime) -> None:
    text = iso(dt)
    assert len(text) == 24 and text.endswith("Z")
    back = parse_time(text)
    assert back == dt.replace(microsecond=dt.microsecond // 1000 * 1000)
    assert iso(back) == text
