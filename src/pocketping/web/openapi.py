"""``GET <mount>/openapi.json``: the widget endpoints as an OpenAPI 3.1 document, built from the
wire models of :mod:`pocketping.protocol` (the same models that validate requests)."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from .. import protocol as p

_REF = "#/components/schemas/{model}"

#: Errors every endpoint may answer, besides its own.
_COMMON_ERRORS = {
    "400": "bad input (the detail says what)",
    "403": "the client or visitor is not allowed",
    "429": "over a rate limit; Retry-After says when to try again",
}

_RETRY_AFTER = {"Retry-After": {"description": "whole seconds to wait", "schema": {"type": "integer", "minimum": 1}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


def _op(
    summary: str,
    answer: type[BaseModel] | None,
    *,
    body: type[BaseModel] | None = None,
    errors: dict[str, str] | None = None,
    params: list[dict[str, Any]] | None = None,
    raw_answer: dict[str, Any] | None = None,
    common: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    ok: dict[str, Any] = {"description": "OK"}
    if answer is not None:
        ok.update(_json(answer))
    elif raw_answer is not None:
        ok.update(raw_answer)
    op["responses"]["200"] = ok
    for status, text in {**(_COMMON_ERRORS if common else {}), **(errors or {})}.items():
        op["responses"][status] = {"description": text, **_json(p.ErrorResponse)}
        if status == "429":
            op["responses"][status]["headers"] = _RETRY_AFTER
    return op


def _query(name: str, *, required: bool = False, description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


SESSION = _query("sessionId", required=True, description="the session's id")
NOT_FOUND = {"404": "no such session (or message)"}


@cache
def openapi_document() -> dict[str, Any]:
    """The document (the same for every PocketPing of this version)."""
    models: list[type[BaseModel]] = [
        p.ConnectRequest,
        p.SendMessageRequest,
        p.EditMessageRequest,
        p.TypingRequest,
        p.ReadRequest,
        p.IdentifyRequest,
        p.PreChatRequest,
        p.CsatRequest,
        p.SessionOnlyRequest,
        p.UploadRequest,
        p.CompleteRequest,
        p.ConnectResponse,
        p.SendMessageResponse,
        p.EditMessageResponse,
        p.DeleteMessageResponse,
        p.MessagesResponse,
        p.OkResponse,
        p.ReadResponse,
        p.ScreenshotRequestsResponse,
        p.HealthResponse,
        p.UploadResponse,
        p.AttachmentOut,
        p.ErrorResponse,
    ]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    identity_refused = {"401": "identity.userHash is wrong or required"}
    # The JSON POST endpoints: path, summary, request, answer, errors besides 400 / 403 / 404.
    posts: list[tuple[str, str, type[BaseModel], type[BaseModel], dict[str, str]]] = [
        ("/message", "A visitor message", p.SendMessageRequest, p.SendMessageResponse, {"413": "body too large"}),
        ("/typing", "The visitor is typing", p.TypingRequest, p.OkResponse, {}),
        ("/read", "Read receipts", p.ReadRequest, p.ReadResponse, {}),
        ("/identify", "Who the visitor is", p.IdentifyRequest, p.OkResponse, identity_refused),
        ("/prechat", "Pre-chat form answers", p.PreChatRequest, p.OkResponse, {}),
        ("/csat", "Satisfaction rating", p.CsatRequest, p.OkResponse, {}),
        ("/disconnect", "The page is closing", p.SessionOnlyRequest, p.OkResponse, {}),
        ("/visibility", "The page was hidden or shown", p.SessionOnlyRequest, p.OkResponse, {}),
        ("/upload", "Reserve an attachment upload", p.UploadRequest, p.UploadResponse, {}),
        ("/upload/complete", "Finish an upload", p.CompleteRequest, p.AttachmentOut, {}),
    ]
    paths: dict[str, dict[str, Any]] = {
        path: {"post": _op(summary, answer, body=body, errors={**NOT_FOUND, **errors})}
        for path, summary, body, answer, errors in posts
    }
    paths["/connect"] = {
        "post": _op(
            "Start or resume the visitor's session",
            p.ConnectResponse,
            body=p.ConnectRequest,
            errors={**identity_refused, "426": "widget too old"},
        )
    }
    paths |= {
        "/message/{messageId}": {
            "patch": _op(
                "Edit one of the visitor's messages",
                p.EditMessageResponse,
                body=p.EditMessageRequest,
                errors=NOT_FOUND,
                params=[_path("messageId")],
            ),
            "delete": _op(
                "Delete one of the visitor's messages",
                p.DeleteMessageResponse,
                errors=NOT_FOUND,
                params=[_path("messageId"), SESSION],
            ),
        },
        "/messages": {
            "get": _op(
                "The session's messages, or those changed after a cursor",
                p.MessagesResponse,
                errors=NOT_FOUND,
                params=[
                    SESSION,
                    _query("after", description="ISO-8601 cursor: messages created or changed after it"),
                    _query("limit", description="1 to 1000 (default 500)"),
                ],
            )
        },
        "/screenshot/requests": {
            "get": _op("Pending screenshot requests", p.ScreenshotRequestsResponse, params=[SESSION])
        },
        "/upload/{attachmentId}": {
            "put": {
                **_op("The file's bytes", p.OkResponse, errors={**NOT_FOUND, "413": "file too large"}),
                "parameters": [_path("attachmentId")],
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
            }
        },
        "/attachments/{attachmentId}": {
            "get": _op(
                "An uploaded file",
                None,
                errors=NOT_FOUND,
                params=[_path("attachmentId")],
                raw_answer={"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
            )
        },
        "/stream": {
            "get": _op(
                "Real-time pushes: a WebSocket (Upgrade) or Server-Sent Events, each frame "
                '`{"type": "message" | "typing" | "presence" | "read" | "message_edited" | '
                '"message_deleted" | "event", "data": {...}}`',
                None,
                errors={
                    **NOT_FOUND,
                    "426": "this server cannot upgrade to WebSocket (WSGI)",
                    "503": "no SSE stream available on this process (max_sse_streams): poll /messages",
                },
                params=[SESSION, _query("after", description="ISO-8601 cursor (SSE also reads Last-Event-ID)")],
                raw_answer={"content": {"text/event-stream": {"schema": {"type": "string"}}}},
            )
        },
        "/health": {"get": _op("Liveness", p.HealthResponse, common=False)},  # never screened nor counted
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PocketPing widget API",
            "version": __version__,
            "description": "The endpoints the chat widget calls. Real-time pushes come over "
            "`GET /stream` (WebSocket or Server-Sent Events), not described here.",
        },
        "paths": paths,
        "components": {"schemas": top.get("$defs", {})},
    }
