"""Wire schemas of the widget protocol (requests the widget sends), validated with pydantic.

Field names are the widget's camelCase. Unknown fields are ignored, so newer widgets keep
working; wrong types and missing required fields are rejected with a 400 that names them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import from_json

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]

#: Bounds of a free-form object a visitor sends (metadata, identity, event data).
OBJECT_MAX_KEYS = 100
OBJECT_MAX_BYTES = 32 * 1024
OBJECT_MAX_DEPTH = 10


def plain_object(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` if it is plain, bounded JSON: finite numbers only (``NaN``, ``Infinity`` and
    ``1e999`` are not JSON, and would break every reader of the session), at most
    :data:`OBJECT_MAX_KEYS` keys, :data:`OBJECT_MAX_BYTES` bytes and :data:`OBJECT_MAX_DEPTH` levels."""
    size = _measure(value, 0)
    if len(value) > OBJECT_MAX_KEYS:
        raise ValueError(f"at most {OBJECT_MAX_KEYS} keys")
    if size > OBJECT_MAX_BYTES:
        raise ValueError(f"at most {OBJECT_MAX_BYTES // 1024} KB")
    return value


def _measure(value: Any, depth: int) -> int:
    """About the JSON size of ``value``; ValueError for non-finite numbers or deep nesting."""
    if depth > OBJECT_MAX_DEPTH:
        raise ValueError(f"nested more than {OBJECT_MAX_DEPTH} levels deep")
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("numbers must be finite (NaN and Infinity are not JSON)")
        return 24
    if isinstance(value, dict):
        return 2 + sum(len(str(k)) + 3 + _measure(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(1 + _measure(v, depth + 1) for v in value)
    return 20  # int, bool, null


PlainObject = Annotated[dict[str, Any], AfterValidator(plain_object)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=1_000_000)


class ConnectRequest(_In):
    visitorId: Id
    #: ``""`` means no session, like null.
    sessionId: Annotated[str, StringConstraints(max_length=128, strip_whitespace=True)] | None = None
    inspectorToken: str | None = None
    metadata: PlainObject = Field(default_factory=dict)
    identity: PlainObject | None = None


class SendMessageRequest(_In):
    sessionId: Id
    content: str
    sender: str | None = None
    attachmentIds: list[Id] = Field(default_factory=list, max_length=20)
    replyTo: Id | None = None


class EditMessageRequest(_In):
    sessionId: Id
    content: str


class TypingRequest(_In):
    sessionId: Id
    sender: str | None = None
    isTyping: bool = True


class ReadRequest(_In):
    sessionId: Id
    messageIds: list[Id] = Field(max_length=500)
    status: Literal["read", "delivered"] = "read"


class IdentifyRequest(_In):
    sessionId: Id
    identity: PlainObject


class PreChatRequest(_In):
    sessionId: Id
    email: Annotated[str, StringConstraints(max_length=254, strip_whitespace=True)] | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{6,14}$")] | None = None
    phoneCountry: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = None


class CsatRequest(_In):
    sessionId: Id
    score: Annotated[int, Field(ge=1, le=5, strict=True)]
    comment: Annotated[str, StringConstraints(max_length=2000)] | None = None


class SessionOnlyRequest(_In):
    """``/disconnect`` and ``/visibility``: only the session id matters."""

    sessionId: Id


class WidgetEventData(_In):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    data: PlainObject | None = None
    timestamp: str | None = None


class WidgetFrame(_In):
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


class UploadRequest(_In):
    sessionId: Id
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    mimeType: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "application/octet-stream"
    size: Annotated[int, Field(strict=True, ge=1)]


class CompleteRequest(_In):
    sessionId: Id
    attachmentId: Id


# -- answers (documentation of the wire, published as /openapi.json) --------------------------


class _Out(BaseModel):
    """An answer's documented fields; newer servers may add others."""

    model_config = ConfigDict(extra="allow")


class AttachmentOut(_Out):
    id: str
    filename: str
    mimeType: str
    size: int
    url: str
    status: str
    thumbnailUrl: str | None = None


class MessageOut(_Out):
    id: str
    sessionId: str
    content: str
    sender: Literal["visitor", "operator", "ai", "system"]
    timestamp: str
    status: str
    deliveredAt: str | None = None
    readAt: str | None = None
    editedAt: str | None = None
    deletedAt: str | None = None
    replyTo: str | None = None
    attachments: list[AttachmentOut] | None = None


class ConnectResponse(_Out):
    sessionId: str
    visitorId: str
    operatorOnline: bool
    operatorReachable: bool
    messages: list[MessageOut]
    welcomeMessage: str | None = None
    identity: dict[str, Any] | None = None
    preChatForm: dict[str, Any] | None = None
    operatorName: str | None = None
    operatorAvatar: str | None = None
    primaryColor: str | None = None


class SendMessageResponse(_Out):
    messageId: str
    timestamp: str
    attachments: list[AttachmentOut] | None = None


class EditedMessage(_Out):
    id: str
    content: str
    editedAt: str


class EditMessageResponse(_Out):
    message: EditedMessage


class DeleteMessageResponse(_Out):
    deleted: bool


class MessagesResponse(_Out):
    messages: list[MessageOut]
    hasMore: bool


class OkResponse(_Out):
    ok: bool
    alreadyRated: bool | None = None


class ReadResponse(_Out):
    updated: int


class ScreenshotRequestsResponse(_Out):
    requests: list[Any]


class HealthResponse(_Out):
    status: str
    version: str
    storage: str
    streams: int


class UploadResponse(_Out):
    attachmentId: str
    uploadUrl: str
    expiresAt: str


class ErrorResponse(_Out):
    """Every error: a code (``session_not_found``, ``invalid_input``, …) and what is wrong."""

    error: str
    detail: Any = None


def load_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body; ValueError (``invalid JSON: ...``, ``expected an
    object``) for anything else, however it is malformed: nesting over 200 levels, lone UTF-16
    surrogates (which no database could store) and invalid UTF-8 included."""
    try:
        data = from_json(body)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("expected an object")
    return data
