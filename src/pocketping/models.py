"""The data PocketPing works with: sessions, messages, custom events, attachments.

Every model reads as attributes (``session.id``) and as a read-only mapping with the
snake_case keys a storage uses (``session["visitor_id"]``, ``message["type"]``), so storage
code written like the seed documentation works unchanged. ``to_wire()`` gives the camelCase
JSON the widget reads (UTC millisecond ``Z`` timestamps, absent fields omitted).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Sender = Literal["visitor", "operator", "ai", "system"]
SENDERS: frozenset[str] = frozenset({"visitor", "operator", "ai", "system"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: One encoder for every compact JSON text we send (json.dumps builds a new one per call when
#: given options, which costs more than encoding a small message).
# allow_nan=False: NaN and Infinity are not JSON; nothing that emits them may leave.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def compact_json(obj: Any) -> str:
    """``obj`` as compact JSON text (UTF-8 kept as is), as sent to widgets and bridges."""
    return _COMPACT.encode(obj)


def new_id(prefix: str) -> str:
    """A URL-safe random id such as ``msg_3kT9x0aQ1b2c4d5e``."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def iso(dt: datetime) -> str:
    """``2026-06-04T09:34:50.123Z``: UTC, milliseconds, ``Z``."""
    if dt.tzinfo is not None and dt.utcoffset():
        dt = dt.astimezone(UTC)
    return dt.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


#: The instants a timestamp may name: chat history starts in 1970 and ends before year 10000
#: (so that every time zone, epoch milliseconds and ISO text can represent it).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def parse_time(value: Any) -> datetime:
    """A timezone-aware UTC datetime from a datetime, an ISO-8601 string or epoch milliseconds;
    ValueError for anything else, or outside 1970-01-01 .. 9999-12-30."""
    try:
        dt = _to_utc(value)
    except (OverflowError, OSError):
        raise ValueError(f"timestamp out of range (1970 to 9999): {value!r}") from None
    if not EARLIEST <= dt <= LATEST:
        raise ValueError(f"timestamp out of range (1970 to 9999): {value!r}")
    return dt


def _to_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a timestamp: {value!r}")
        return from_ms(int(value))
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    raise ValueError(f"not a timestamp: {value!r}")


def _opt_time(value: Any) -> datetime | None:
    return None if value is None or value == "" else parse_time(value)


def _json_field(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


class _MappingModel(Mapping[str, Any]):
    """Read-only mapping access over a dataclass's fields, plus aliases."""

    __slots__ = ()
    _aliases: dict[str, str] = {}

    def __getitem__(self, key: str) -> Any:
        name = self._aliases.get(key, key)
        if name.startswith("_") or name not in self.__dataclass_fields__:  # type: ignore[attr-defined]
            raise KeyError(key)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy with snake_case keys (datetimes kept as datetimes)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]


@dataclass(slots=True, eq=True)
class Attachment(_MappingModel):
    """A file attached to a message."""

    id: str
    filename: str
    mime_type: str
    size: int
    url: str = ""
    thumbnail_url: str | None = None
    status: str = "ready"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "filename": self.filename,
            "mimeType": self.mime_type,
            "size": self.size,
            "url": self.url,
            "status": self.status,
        }
        if self.thumbnail_url:
            out["thumbnailUrl"] = self.thumbnail_url
        return out

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> Attachment:
        if isinstance(row, Attachment):
            return row
        return cls(
            id=str(row["id"]),
            filename=str(row.get("filename", "file")),
            mime_type=str(row.get("mime_type") or row.get("mimeType") or "application/octet-stream"),
            size=int(row.get("size") or 0),
            url=str(row.get("url") or ""),
            thumbnail_url=row.get("thumbnail_url") or row.get("thumbnailUrl"),
            status=str(row.get("status") or "ready"),
        )


@dataclass(slots=True, eq=True)
class Session(_MappingModel):
    """One conversation with one visitor.

    ``metadata`` holds what the widget reports (``url``, ``referrer``, ``pageTitle``,
    ``userAgent``, ``timezone``, ``language``, ``screenResolution``, ``botSignals``) plus
    ``ip``; ``identity`` what the site told us through ``identify`` (``id``, ``email``,
    ``name``, …); ``data`` free-form state kept by PocketPing and its bridges.
    """

    id: str
    visitor_id: str
    created_at: datetime
    last_activity: datetime | None = None
    status: Literal["active", "closed"] = "active"
    closed_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def identity_verified(self) -> bool:
        """Whether the identity came with a valid ``userHash`` (see ``identity_secret``)."""
        return bool(self.data.get("identity_verified", False))

    def copy(self) -> Session:
        """A copy whose metadata, identity and data can change without touching this one."""
        return Session(
            self.id,
            self.visitor_id,
            self.created_at,
            self.last_activity,
            self.status,
            self.closed_at,
            dict(self.metadata),
            dict(self.identity) if self.identity is not None else None,
            dict(self.data),
        )

    @property
    def banned(self) -> bool:
        """Whether operators blocked this visitor (``pp.ban``)."""
        return bool(self.data.get("banned", False))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "sessionId": self.id,
            "visitorId": self.visitor_id,
            "createdAt": iso(self.created_at),
            "lastActivity": iso(self.last_activity or self.created_at),
            "status": self.status,
            "metadata": self.metadata,
        }
        if self.closed_at:
            out["closedAt"] = iso(self.closed_at)
        if self.identity:
            out["identity"] = self.identity
            out["identityVerified"] = self.identity_verified
        if self.banned:
            out["banned"] = True
        return out

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> Session:
        if isinstance(row, Session):
            return row
        g = row.get
        created = parse_time(g("created_at") or g("createdAt") or datetime.now(UTC))
        return cls(
            id=str(g("id") or g("session_id") or g("sessionId")),
            visitor_id=str(g("visitor_id") or g("visitorId") or ""),
            created_at=created,
            last_activity=_opt_time(g("last_activity") or g("lastActivity")),
            status="closed" if g("status") == "closed" else "active",
            closed_at=_opt_time(g("closed_at") or g("closedAt")),
            metadata=dict(_json_field(g("metadata"), {})),
            identity=_json_field(g("identity"), None),
            data=_session_data(g("data"), g("identityVerified")),
        )


def _session_data(data: Any, identity_verified: Any) -> dict[str, Any]:
    out = dict(_json_field(data, {}))
    if identity_verified is not None:  # a wire copy (the bridge server's) carries the flag
        out["identity_verified"] = bool(identity_verified)
    return out


@dataclass(slots=True, eq=True)
class Message(_MappingModel):
    """One chat message.

    ``sender`` is who wrote it (``visitor``, ``operator``, ``ai`` or ``system``); ``type`` is
    the same value under the seed documentation's name. ``updated_at`` is the stamp of the
    last change (creation, edit, delete, read); stamps are unique and increasing within a
    session, and are the widget's reconnect cursor.
    """

    id: str
    session_id: str
    content: str
    sender: str
    created_at: datetime
    updated_at: datetime | None = None
    status: str = "sent"
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    edited_at: datetime | None = None
    deleted_at: datetime | None = None
    reply_to: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    _aliases = {"type": "sender", "timestamp": "created_at"}  # noqa: RUF012

    @property
    def type(self) -> str:
        return self.sender

    @property
    def timestamp(self) -> datetime:
        return self.created_at

    @property
    def cursor(self) -> datetime:
        return self.updated_at or self.created_at

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "sessionId": self.session_id,
            "content": "" if self.deleted_at else self.content,
            "sender": self.sender,
            "timestamp": iso(self.created_at),
            "status": self.status,
        }
        if self.delivered_at:
            out["deliveredAt"] = iso(self.delivered_at)
        if self.read_at:
            out["readAt"] = iso(self.read_at)
        if self.edited_at:
            out["editedAt"] = iso(self.edited_at)
        if self.deleted_at:
            out["deletedAt"] = iso(self.deleted_at)
        if self.reply_to:
            out["replyTo"] = self.reply_to
        if self.attachments:
            out["attachments"] = [a.to_wire() for a in self.attachments]
        return out

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], session_id: str | None = None) -> Message:
        if isinstance(row, Message):
            return row
        g = row.get
        created = parse_time(g("created_at") or g("timestamp") or g("createdAt") or datetime.now(UTC))
        return cls(
            id=str(g("id")),
            session_id=str(g("session_id") or g("sessionId") or session_id or ""),
            content=str(g("content") or ""),
            sender=str(g("sender") or g("type") or "visitor"),
            created_at=created,
            updated_at=_opt_time(g("updated_at") or g("updatedAt")) or created,
            status=str(g("status") or "sent"),
            delivered_at=_opt_time(g("delivered_at") or g("deliveredAt")),
            read_at=_opt_time(g("read_at") or g("readAt")),
            edited_at=_opt_time(g("edited_at") or g("editedAt")),
            deleted_at=_opt_time(g("deleted_at") or g("deletedAt")),
            reply_to=g("reply_to") or g("replyTo"),
            attachments=[Attachment.from_mapping(a) for a in _json_field(g("attachments"), [])],
            metadata=dict(_json_field(g("metadata"), {})),
        )


@dataclass(slots=True, eq=True)
class Event(_MappingModel):
    """A custom event, from the widget (``PocketPing.trigger``) or to it (``emit_event``)."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    session_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "timestamp": iso(self.timestamp)}
        if self.data:
            out["data"] = self.data
        if self.session_id:
            out["sessionId"] = self.session_id
        return out
