"""The row layout the SQL storages share (SQLite and PostgreSQL): same columns, same order.

Times are integer milliseconds since the epoch; JSON columns are text in SQLite and ``jsonb``
in PostgreSQL, so each storage passes its own ``load`` (``json.loads``, or nothing to do).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..errors import StorageError
from ..models import Attachment, Message, Session, from_ms, to_ms
from ..stats import SATISFIED

MESSAGE_COLUMNS = (
    "id, session_id, created_ms, updated_ms, sender, content, status, delivered_ms, read_ms, "
    "edited_ms, deleted_ms, reply_to, attachments, metadata"
)
SESSION_COLUMNS = "id, visitor_id, created_ms, last_activity_ms, status, closed_ms, metadata, identity, data"

Load = Callable[[Any], Any]


def check_schema_version(version: int, known: int) -> None:
    """Refuse a database whose schema is newer than this PocketPing's migrations."""
    if version > known:
        raise StorageError(
            f"database schema version {version} is newer than this PocketPing (knows {known}); upgrade pocketping"
        )


def _as_is(value: Any) -> Any:
    return value


def ms(dt: datetime | None) -> int | None:
    return None if dt is None else to_ms(dt)


def dt(value: int | None) -> datetime | None:
    return None if value is None else from_ms(value)


def message_from_row(r: tuple[Any, ...], load: Load = _as_is) -> Message:
    return Message(
        id=r[0],
        session_id=r[1],
        created_at=from_ms(r[2]),
        updated_at=from_ms(r[3]),
        sender=r[4],
        content=r[5],
        status=r[6],
        delivered_at=dt(r[7]),
        read_at=dt(r[8]),
        edited_at=dt(r[9]),
        deleted_at=dt(r[10]),
        reply_to=r[11],
        attachments=[Attachment.from_mapping(a) for a in load(r[12])] if r[12] else [],
        metadata=dict(load(r[13])) if r[13] else {},
    )


def session_from_row(r: tuple[Any, ...], load: Load = _as_is) -> Session:
    return Session(
        id=r[0],
        visitor_id=r[1],
        created_at=from_ms(r[2]),
        last_activity=from_ms(r[3]),
        status="closed" if r[4] == "closed" else "active",
        closed_at=dt(r[5]),
        metadata=dict(load(r[6])) if r[6] else {},
        identity=dict(load(r[7])) if r[7] is not None else None,
        data=dict(load(r[8])) if r[8] else {},
    )


def session_values(s: Session, dump: Load) -> tuple[Any, ...]:
    """A session's columns in :data:`SESSION_COLUMNS` order (``dump`` encodes JSON values)."""
    return (
        s.id,
        s.visitor_id,
        to_ms(s.created_at),
        to_ms(s.last_activity or s.created_at),
        s.status,
        ms(s.closed_at),
        dump(s.metadata),
        None if s.identity is None else dump(s.identity),
        dump(s.data),
    )


def message_values(m: Message, dump: Load) -> tuple[Any, ...]:
    """A message's columns after ``updated_ms`` in :data:`MESSAGE_COLUMNS` order."""
    return (
        m.sender,
        m.content,
        m.status,
        ms(m.delivered_at),
        ms(m.read_at),
        ms(m.edited_at),
        ms(m.deleted_at),
        m.reply_to,
        dump([a.to_dict() for a in m.attachments]) if m.attachments else None,
        dump(m.metadata) if m.metadata else None,
    )


def message_assignments(mark: str) -> str:
    """The columns :func:`message_values` gives, as ``SET`` assignments (``mark``: placeholder)."""
    names = MESSAGE_COLUMNS.split(", ")[4:]
    return ", ".join(f"{name}={mark}" for name in names)


def messages_query(
    table: str, mark: str, session_id: str, after: datetime | None, limit: Any
) -> tuple[str, tuple[Any, ...]]:
    """SQL and parameters of ``get_messages``: oldest first, or changed after ``after`` in
    change order."""
    if after is None:
        sql = f"SELECT {MESSAGE_COLUMNS} FROM {table} WHERE session_id = {mark} ORDER BY created_ms LIMIT {mark}"
        return sql, (session_id, limit)
    sql = (
        f"SELECT {MESSAGE_COLUMNS} FROM {table} WHERE session_id = {mark} AND updated_ms > {mark} "
        f"ORDER BY updated_ms LIMIT {mark}"
    )
    return sql, (session_id, to_ms(after), limit)


#: The outbox columns :func:`outbox_job` reads, in order.
OUTBOX_COLUMNS = "id, bridge, session_id, kind, key, payload, attempts, state"


def outbox_job(r: tuple[Any, ...]) -> dict[str, Any]:
    """A claimed outbox row (:data:`OUTBOX_COLUMNS`, state before the claim) as a job."""
    return {
        "id": int(r[0]),
        "bridge": r[1],
        "session_id": r[2],
        "kind": r[3],
        "key": r[4],
        "payload": json.loads(r[5]),
        "attempts": r[6],
        "reclaimed": r[7] == "inflight",
    }


def stats_queries(sessions: str, messages: str, mark: str, text: Callable[[str, str], str]) -> dict[str, str]:
    """The aggregate queries of ``conversation_stats``, for both SQL storages: table names,
    the placeholder (``?`` or ``%s``) and how to read text at a JSON path (``text(column,
    "a.b")``) are theirs. Each takes the window's (start ms, end ms)."""
    score = text("data", "csat.score")
    source = (
        f"CASE WHEN sender = 'ai' THEN 'ai' WHEN {text('metadata', 'bridge')} IS NOT NULL THEN "
        f"{text('metadata', 'bridge')} WHEN {text('metadata', 'source')} IS NOT NULL THEN "
        f"{text('metadata', 'source')} ELSE 'api' END"
    )
    return {
        "conversations": f"SELECT count(*) FROM {sessions} WHERE created_ms >= {mark} AND created_ms < {mark}",
        "visitor_messages": (
            f"SELECT count(*) FROM {messages} WHERE sender = 'visitor' AND created_ms >= {mark} AND created_ms < {mark}"
        ),
        "replies": (
            f"SELECT {source} AS src, count(*) FROM {messages} WHERE sender IN ('operator', 'ai') "
            f"AND created_ms >= {mark} AND created_ms < {mark} GROUP BY src"
        ),
        # Per conversation of the window in which the visitor wrote: its first visitor message
        # and the first reply at or after it.
        "first_responses": (
            f"SELECT v.fv, (SELECT min(r.created_ms) FROM {messages} r WHERE r.session_id = v.sid "
            "AND r.sender IN ('operator', 'ai') AND r.created_ms >= v.fv) "
            f"FROM (SELECT m.session_id AS sid, min(m.created_ms) AS fv FROM {messages} m "
            f"JOIN {sessions} s ON s.id = m.session_id WHERE s.created_ms >= {mark} AND s.created_ms < {mark} "
            "AND m.sender = 'visitor' GROUP BY m.session_id) v"
        ),
        "csat": (
            f"SELECT count(*), coalesce(sum(CASE WHEN CAST({score} AS INTEGER) >= {SATISFIED} THEN 1 ELSE 0 END), 0) "
            f"FROM {sessions} WHERE {score} IS NOT NULL AND created_ms >= {mark} AND created_ms < {mark}"
        ),
    }


def unanswered_query(sessions: str, messages: str) -> str:
    """Active sessions whose last visitor message has no reply after it (no window)."""
    return (
        "SELECT count(*) FROM (SELECT session_id, "
        "max(CASE WHEN sender = 'visitor' THEN created_ms END) AS lv, "
        "max(CASE WHEN sender IN ('operator', 'ai') THEN created_ms END) AS lr "
        f"FROM {messages} WHERE deleted_ms IS NULL GROUP BY session_id) x JOIN {sessions} s ON s.id = x.session_id "
        "WHERE s.status = 'active' AND x.lv IS NOT NULL AND (x.lr IS NULL OR x.lr < x.lv)"
    )
