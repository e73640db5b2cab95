"""The shapes of what an SDK reports to the bridge server, checked before anything is stored:
a row that cannot be read back would fail its outbox job on every retry.

Only the fields the bridge server reads are described; others pass through. Timestamps are
ISO-8601 (or Unix seconds), ids and texts are strings, metadata and identity are objects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InvalidInput


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class WireSession(_Wire):
    id: str | None = Field(default=None, min_length=1, max_length=200)
    sessionId: str | None = Field(default=None, min_length=1, max_length=200)
    visitorId: str = Field(default="", max_length=200)
    createdAt: datetime | None = None
    lastActivity: datetime | None = None
    closedAt: datetime | None = None
    status: Literal["active", "closed"] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    identity: dict[str, Any] | None = None
    identityVerified: bool | None = None

    @model_validator(mode="after")
    def _has_id(self) -> WireSession:
        if not (self.id or self.sessionId):
            raise ValueError("session.id is required")
        return self


class WireAttachment(_Wire):
    id: str = Field(min_length=1, max_length=200)
    filename: str = Field(default="file", max_length=500)
    mimeType: str | None = Field(default=None, max_length=200)
    size: int = Field(default=0, ge=0)
    url: str = Field(default="", max_length=4000)
    thumbnailUrl: str | None = Field(default=None, max_length=4000)
    status: str | None = Field(default=None, max_length=40)


class WireMessage(_Wire):
    id: str = Field(min_length=1, max_length=200)
    content: str = ""
    timestamp: datetime | None = None
    createdAt: datetime | None = None
    editedAt: datetime | None = None
    deletedAt: datetime | None = None
    replyTo: str | None = Field(default=None, max_length=200)
    attachments: list[WireAttachment] = Field(default_factory=list, max_length=20)
    operatorName: str | None = Field(default=None, max_length=200)


def checked(model: type[_Wire], value: Any, where: str) -> dict[str, Any]:
    """``value`` if it fits ``model`` (as a plain dict), else :class:`InvalidInput` naming the
    fields that do not."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    try:
        model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else f"{where}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise InvalidInput(problems) from None
    return value
