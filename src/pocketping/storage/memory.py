"""In-memory storage: fast, nothing survives the process. For tests and demos."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..models import Message, Session, from_ms, to_ms
from .base import BaseStorage, apply_changes, next_stamp


def _copy_message(m: Message) -> Message:
    return dataclasses.replace(m, attachments=list(m.attachments), metadata=dict(m.metadata))


def _copy_session(s: Session) -> Session:
    return dataclasses.replace(
        s,
        metadata=dict(s.metadata),
        identity=dict(s.identity) if s.identity is not None else None,
        data=dict(s.data),
    )


class MemoryStorage(BaseStorage):
    """Keeps everything in dicts. Thread-safe; models are copied in and out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._by_visitor: dict[str, str] = {}
        self._messages: dict[str, list[Message]] = {}
        self._index: dict[str, Message] = {}
        self._last_stamp: dict[str, int] = {}

    async def create_session(self, session: Session) -> None:
        with self._lock:
            self._sessions[session.id] = _copy_session(session)
            self._by_visitor[session.visitor_id] = session.id
            self._messages.setdefault(session.id, [])

    async def get_session(self, session_id: str) -> Session | None:
        s = self._sessions.get(session_id)
        return _copy_session(s) if s is not None else None

    async def update_session(self, session: Session) -> None:
        with self._lock:
            if session.id in self._sessions:
                self._sessions[session.id] = _copy_session(session)

    async def list_sessions(self, *, limit: int | None = None, include_closed: bool = False) -> list[Session]:
        with self._lock:
            sessions = [s for s in self._sessions.values() if include_closed or s.is_active]
        sessions.sort(key=lambda s: s.last_activity or s.created_at, reverse=True)
        return [_copy_session(s) for s in sessions[:limit]]

    async def find_session_by_visitor(self, visitor_id: str) -> Session | None:
        sid = self._by_visitor.get(visitor_id)
        return await self.get_session(sid) if sid else None

    def _stamp(self, session_id: str, wanted_ms: int | None = None) -> datetime:
        stamp = next_stamp(self._last_stamp.get(session_id), wanted_ms)
        self._last_stamp[session_id] = stamp
        return from_ms(stamp)

    async def save_message(self, session_id: str, message: Message) -> Message:
        with self._lock:
            stamp = self._stamp(session_id, to_ms(message.created_at))
            message.created_at = message.updated_at = stamp
            stored = _copy_message(message)
            self._messages.setdefault(session_id, []).append(stored)
            self._index[message.id] = stored
            session = self._sessions.get(session_id)
            if session is not None:
                session.last_activity = stamp
        return message

    async def get_messages(
        self, session_id: str, *, after: datetime | None = None, limit: int | None = None
    ) -> list[Message]:
        with self._lock:
            messages = self._messages.get(session_id, [])
            if after is not None:
                found = [m for m in messages if (m.updated_at or m.created_at) > after]
                found.sort(key=lambda m: m.updated_at or m.created_at)
            else:
                found = list(messages)
            return [_copy_message(m) for m in found[:limit]]

    async def get_message(self, session_id: str, message_id: str) -> Message | None:
        m = self._index.get(message_id)
        return _copy_message(m) if m is not None and m.session_id == session_id else None

    async def update_message(self, session_id: str, message_id: str, changes: Mapping[str, Any]) -> Message | None:
        with self._lock:
            m = self._index.get(message_id)
            if m is None or m.session_id != session_id:
                return None
            apply_changes(m, changes, self._stamp(session_id))
            return _copy_message(m)
