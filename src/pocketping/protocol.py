"""Wire schemas of the widget protocol (requests the widget sends), validated with pydantic.

Field names are the widget's camelCase. Unknown fields are ignored, so newer widgets keep
working; wrong types and missing required fields are rejected with a 400 that names them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=1_000_000)


class ConnectRequest(_In):
    visitorId: Id
    sessionId: Id | None = None
    inspectorToken: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    identity: dict[str, Any] | None = None


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
    identity: dict[str, Any]


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
    data: dict[str, Any] | None = None
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
