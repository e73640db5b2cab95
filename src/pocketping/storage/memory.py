"""In-memory storage: fast, nothing survives the process. For tests and demos."""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import SessionNotFound
from ..models import Message, Session, from_ms, now_ms, to_ms
from ..stats import REPLY_SENDERS, SATISFIED, reply_source
from .base import BaseStorage, apply_changes, next_stamp


def _copy_message(m: Message) -> Message:
    # Positional construction: several times faster than dataclasses.replace on this hot path.
    return Message(
        m.id,
        m.session_id,
        m.content,
        m.sender,
        m.created_at,
        m.updated_at,
        m.status,
        m.delivered_at,
        m.read_at,
        m.edited_at,
        m.deleted_at,
        m.reply_to,
        list(m.attachments),
        dict(m.metadata),
    )


def _stamp_of(change: tuple[int, Message]) -> int:
    return change[0]


class MemoryStorage(BaseStorage):
    """Keeps everything in dicts. Thread-safe; models are copied in and out.

    ``outbox_only``: the store keeps only the bridges' outbox and keys for a storage that has
    none (its sessions live elsewhere), so keys are not checked against its own sessions.
    """

    def __init__(self, *, outbox_only: bool = False) -> None:
        self.outbox_only = outbox_only
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._by_visitor: dict[str, str] = {}
        self._messages: dict[str, list[Message]] = {}
        #: Per session, (stamp, message) for each save and update, in stamp order.
        self._changes: dict[str, list[tuple[int, Message]]] = {}
        self._index: dict[str, Message] = {}
        self._last_stamp: dict[str, int] = {}
        self._outbox: dict[int, dict[str, Any]] = {}
        self._outbox_seq = 0
        self._bridge_keys: dict[str, str] = {}
        self._bridge_key_session: dict[str, str] = {}
        self._bans: dict[tuple[str, str], dict[str, Any]] = {}
        self._operators: dict[str, dict[str, Any]] = {}

    async def create_session(self, session: Session) -> None:
        with self._lock:
            self._sessions[session.id] = session.copy()
            self._by_visitor[session.visitor_id] = session.id
            self._messages.setdefault(session.id, [])

    async def get_session(self, session_id: str) -> Session | None:
        s = self._sessions.get(session_id)
        return s.copy() if s is not None else None

    async def has_session(self, session_id: str) -> bool:
        return session_id in self._sessions

    async def update_session(self, session: Session) -> None:
        with self._lock:
            if session.id in self._sessions:
                self._sessions[session.id] = session.copy()

    async def list_sessions(self, *, limit: int | None = None, include_closed: bool = False) -> list[Session]:
        with self._lock:
            sessions = [s for s in self._sessions.values() if include_closed or s.is_active]
        sessions.sort(key=lambda s: s.last_activity or s.created_at, reverse=True)
        return [s.copy() for s in sessions[:limit]]

    async def find_session_by_visitor(self, visitor_id: str) -> Session | None:
        sid = self._by_visitor.get(visitor_id)
        return await self.get_session(sid) if sid else None

    def _stamp(self, session_id: str, wanted_ms: int | None = None) -> datetime:
        stamp = next_stamp(self._last_stamp.get(session_id), wanted_ms)
        self._last_stamp[session_id] = stamp
        return from_ms(stamp)

    async def save_message(self, session_id: str, message: Message) -> Message:
        with self._lock:
            if session_id not in self._sessions:
                raise SessionNotFound(session_id)
            stamp = self._stamp(session_id, to_ms(message.created_at))
            message.created_at = message.updated_at = stamp
            stored = _copy_message(message)
            self._messages.setdefault(session_id, []).append(stored)
            self._changes.setdefault(session_id, []).append((self._last_stamp[session_id], stored))
            self._index[message.id] = stored
            session = self._sessions.get(session_id)
            if session is not None:
                session.last_activity = stamp
        return message

    async def get_messages(
        self, session_id: str, *, after: datetime | None = None, limit: int | None = None
    ) -> list[Message]:
        with self._lock:
            if after is None:
                return [_copy_message(m) for m in self._messages.get(session_id, [])[:limit]]
            # Stamps only grow within a session, so the change log is in stamp order: find the
            # first change after the cursor, then skip entries an update has superseded.
            changes = self._changes.get(session_id, [])
            found = []
            for stamp, m in changes[bisect_right(changes, to_ms(after), key=_stamp_of) :]:
                if to_ms(m.cursor) == stamp:
                    found.append(_copy_message(m))
                    if limit is not None and len(found) >= limit:
                        break
            return found

    async def get_message(self, session_id: str, message_id: str) -> Message | None:
        m = self._index.get(message_id)
        return _copy_message(m) if m is not None and m.session_id == session_id else None

    async def update_message(self, session_id: str, message_id: str, changes: Mapping[str, Any]) -> Message | None:
        with self._lock:
            m = self._index.get(message_id)
            if m is None or m.session_id != session_id:
                return None
            apply_changes(m, changes, self._stamp(session_id))
            self._changes[session_id].append((self._last_stamp[session_id], m))
            return _copy_message(m)

    # -- bridges: outbox and key-value map ---------------------------------------------------

    async def outbox_add(
        self, bridge: str, session_id: str, kind: str, key: str, payload: dict[str, Any], *, due_ms: int = 0
    ) -> int:
        with self._lock:
            self._outbox_seq += 1
            self._outbox[self._outbox_seq] = {
                "id": self._outbox_seq,
                "bridge": bridge,
                "session_id": session_id,
                "kind": kind,
                "key": key,
                "payload": dict(payload),
                "attempts": 0,
                "due_ms": due_ms,
                "state": "pending",
                "claimed_ms": 0,
            }
            return self._outbox_seq

    async def outbox_claim(self, *, now_ms: int, lease_ms: int, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            heads: dict[tuple[str, str], dict[str, Any]] = {}
            for row in sorted(self._outbox.values(), key=lambda r: r["id"]):
                if row["state"] != "dead":
                    heads.setdefault((row["bridge"], row["session_id"]), row)
            claimed = []
            for row in sorted(heads.values(), key=lambda r: r["id"]):
                due = row["state"] == "pending" and row["due_ms"] <= now_ms
                expired = row["state"] == "inflight" and row["claimed_ms"] + lease_ms <= now_ms
                if due or expired:
                    claimed.append({**row, "payload": dict(row["payload"]), "reclaimed": expired})
                    row["state"], row["claimed_ms"] = "inflight", now_ms
                    if len(claimed) >= limit:
                        break
            return claimed

    async def outbox_done(self, item_id: int) -> None:
        with self._lock:
            self._outbox.pop(item_id, None)

    async def outbox_retry(self, item_id: int, *, due_ms: int, error: str, dead: bool = False) -> None:
        with self._lock:
            row = self._outbox.get(item_id)
            if row is not None:
                row.update(attempts=row["attempts"] + 1, due_ms=due_ms, error=error)
                row["state"] = "dead" if dead else "pending"

    async def outbox_next_due(self) -> int | None:
        with self._lock:
            heads: dict[tuple[str, str], dict[str, Any]] = {}
            for row in sorted(self._outbox.values(), key=lambda r: r["id"]):
                if row["state"] != "dead":
                    heads.setdefault((row["bridge"], row["session_id"]), row)
            return min((r["due_ms"] for r in heads.values() if r["state"] == "pending"), default=None)

    async def bridge_key_get(self, key: str) -> str | None:
        return self._bridge_keys.get(key)

    async def bridge_key_set(
        self, key: str, value: str, *, only_new: bool = False, session_id: str | None = None
    ) -> bool:
        with self._lock:
            if only_new and key in self._bridge_keys:
                return False
            if session_id is not None and not self.outbox_only and session_id not in self._sessions:
                return False  # erased: nothing is kept about it
            self._bridge_keys[key] = value
            if session_id is not None:
                self._bridge_key_session[key] = session_id
            return True

    async def bridge_key_delete(self, key: str) -> None:
        with self._lock:
            self._bridge_keys.pop(key, None)
            self._bridge_key_session.pop(key, None)

    # -- erasure and retention --------------------------------------------------------------

    async def find_sessions_by_visitor(self, visitor_id: str) -> list[Session]:
        with self._lock:
            found = [s.copy() for s in self._sessions.values() if s.visitor_id == visitor_id]
        return sorted(found, key=lambda s: s.created_at)

    async def list_inactive_sessions(self, before: datetime, *, limit: int) -> list[str]:
        with self._lock:
            idle = [s for s in self._sessions.values() if (s.last_activity or s.created_at) < before]
        idle.sort(key=lambda s: s.last_activity or s.created_at)
        return [s.id for s in idle[:limit]]

    async def delete_sessions(self, session_ids: Sequence[str]) -> int:
        doomed = set(session_ids)
        deleted = 0
        with self._lock:
            for sid in doomed:
                session = self._sessions.pop(sid, None)
                if session is None:
                    continue
                self._changes.pop(sid, None)
                for m in self._messages.pop(sid, []):
                    self._index.pop(m.id, None)
                    deleted += 1
                self._last_stamp.pop(sid, None)
                if self._by_visitor.get(session.visitor_id) == sid:
                    del self._by_visitor[session.visitor_id]
                    rest = [s for s in self._sessions.values() if s.visitor_id == session.visitor_id]
                    if rest:
                        self._by_visitor[session.visitor_id] = max(rest, key=lambda s: s.created_at).id
            for item_id in [i for i, row in self._outbox.items() if row["session_id"] in doomed]:
                del self._outbox[item_id]
            for key in [k for k, sid in self._bridge_key_session.items() if sid in doomed]:
                del self._bridge_key_session[key]
                self._bridge_keys.pop(key, None)
        return deleted

    # -- bans by address and by user ------------------------------------------------------------

    async def list_bans(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(b) for b in self._bans.values()]

    async def save_ban(self, kind: str, value: str, *, reason: str | None = None) -> None:
        with self._lock:
            self._bans.setdefault(
                (kind, value), {"kind": kind, "value": value, "created_ms": now_ms(), "reason": reason}
            )

    async def delete_ban(self, kind: str, value: str) -> None:
        with self._lock:
            self._bans.pop((kind, value), None)

    # -- operator accounts ----------------------------------------------------------------------

    async def list_operators(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._operators.values()]

    async def save_operator(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._operators[record["name"].casefold()] = dict(record)

    async def delete_operator(self, name: str) -> bool:
        with self._lock:
            return self._operators.pop(name.casefold(), None) is not None

    # -- statistics -----------------------------------------------------------------------------

    async def conversation_stats(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        def inside(at: datetime) -> bool:
            return since_ms <= to_ms(at) < until_ms

        with self._lock:
            sessions = list(self._sessions.values())
            messages = {sid: list(found) for sid, found in self._messages.items()}
        figures: dict[str, Any] = {"replies": {}, "first_responses": [], "csat_count": 0, "csat_satisfied": 0}
        figures["conversations"] = sum(1 for s in sessions if inside(s.created_at))
        everything = [m for found in messages.values() for m in found]
        figures["visitor_messages"] = sum(1 for m in everything if m.sender == "visitor" and inside(m.created_at))
        for m in everything:
            if m.sender in REPLY_SENDERS and inside(m.created_at):
                source = reply_source(m.sender, m.metadata)
                figures["replies"][source] = figures["replies"].get(source, 0) + 1
        unanswered = 0
        for s in sessions:
            found = messages.get(s.id, [])
            visitor = [to_ms(m.created_at) for m in found if m.sender == "visitor"]
            replies = [to_ms(m.created_at) for m in found if m.sender in REPLY_SENDERS]
            if inside(s.created_at) and visitor:
                later = [r for r in replies if r >= min(visitor)]
                figures["first_responses"].append((min(visitor), min(later) if later else None))
            live_visitor = [to_ms(m.created_at) for m in found if m.sender == "visitor" and m.deleted_at is None]
            live_replies = [to_ms(m.created_at) for m in found if m.sender in REPLY_SENDERS and m.deleted_at is None]
            if s.status == "active" and live_visitor and (not live_replies or max(live_replies) < max(live_visitor)):
                unanswered += 1
            score = (s.data.get("csat") or {}).get("score") if isinstance(s.data.get("csat"), dict) else None
            if score is not None and inside(s.created_at):
                figures["csat_count"] += 1
                figures["csat_satisfied"] += int(int(score) >= SATISFIED)
        figures["unanswered"] = unanswered
        return figures
