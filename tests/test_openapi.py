"""GET /openapi.json describes the widget endpoints, and a live server keeps to it: schemathesis
sends generated requests (valid and invalid) to every operation; no answer may be a 5xx, and
every answer must match the documented status codes, content types and schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.applications import Starlette

from pocketping import MemoryStorage, PocketPing, RateLimits

from .conftest import LiveServer

SEED_HOOKS: dict[str, Any] = {
    "on_session_start": lambda session: None,
    "on_message": lambda session, message: None,
    "on_event": lambda session, event: None,
}


@pytest.fixture(scope="module")
def live() -> Iterator[str]:
    # The default session and message limits stay (their 429s are part of the contract); the
    # request limit is raised so that generated requests keep reaching every endpoint.
    limits = RateLimits(requests_per_ip="100000/minute")
    pp = PocketPing(storage=MemoryStorage(), welcome_message="Hi!", rate_limits=limits, **SEED_HOOKS)
    # pp.wrap: Starlette's own Mount does not match paths holding a newline and answers those
    # with its plain-text 404, which is the host app's answer, not PocketPing's.
    server = LiveServer(pp.wrap(Starlette())).start()
    try:
        yield server.url + "/pocketping"
    finally:
        server.stop()


def test_the_document_is_openapi_3_1_and_names_every_widget_endpoint(live: str) -> None:
    doc = httpx.get(live + "/openapi.json", timeout=10).json()
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": "/pocketping"}]
    for path in (
        "/connect",
        "/message",
        "/message/{messageId}",
        "/messages",
        "/typing",
        "/read",
        "/identify",
        "/prechat",
        "/csat",
        "/disconnect",
        "/visibility",
        "/upload",
        "/upload/complete",
        "/upload/{attachmentId}",
        "/attachments/{attachmentId}",
        "/stream",
        "/screenshot/requests",
    ):
        assert path in doc["paths"], path
    connect = doc["paths"]["/connect"]["post"]
    assert connect["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ConnectRequest")
    assert "ErrorResponse" in connect["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]


OPERATIONS = [
    ("POST", "/connect"),
    ("POST", "/message"),
    ("PATCH", "/message/{messageId}"),
    ("DELETE", "/message/{messageId}"),
    ("GET", "/messages"),
    ("POST", "/typing"),
    ("POST", "/read"),
    ("POST", "/identify"),
    ("POST", "/prechat"),
    ("POST", "/csat"),
    ("POST", "/disconnect"),
    ("POST", "/visibility"),
    ("GET", "/screenshot/requests"),
    ("POST", "/upload"),
    ("POST", "/upload/complete"),
    ("PUT", "/upload/{attachmentId}"),
    ("GET", "/attachments/{attachmentId}"),
    ("GET", "/health"),
]  # GET /stream is left out: it is the push channel and never ends by itself.


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_server_keeps_to_its_document(live: str, method: str, path: str) -> None:
    schema = schemathesis.openapi.from_url(live + "/openapi.json")
    operation = schema[path][method]
    # Requests that fit the document may still name sessions that do not exist (404), so
    # "valid data gets a 2xx" does not apply; every other check does.

    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        answered.append(case.call_and_validate(excluded_checks=[positive_data_acceptance]).status_code)

    answered: list[int] = []
    check()
    assert answered, "no request reached the server"
