"""PostgreSQL storage: psycopg 3 (async) with a connection pool. Extra: ``pocketping[postgres]``.

The schema is created and migrated on :meth:`PostgresStorage.open`, under a transaction-level
advisory lock, so several workers may start at once. Every call runs in one transaction.

Change stamps come from a per-session counter (``sessions.stamp_ms``) moved with one
``UPDATE ... RETURNING``: the row lock it takes is held until commit, so two writers of the same
session, in any process or on any host, get distinct stamps in commit order, and a stamp never
goes below the writer's clock.

The bridges' outbox (``pocketping_bridge_outbox``) and key-value map (``pocketping_bridge_keys``)
live here too, so bridge deliveries survive restarts. Any number of processes may run bridge
workers on one database: ``outbox_add`` takes a per-line advisory lock so a line's calls become
visible in id order, and ``outbox_claim`` locks the line heads it takes with
``FOR UPDATE SKIP LOCKED``, so a head is claimed by one worker at a time (or re-taken once its
lease ran out), as with SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import SessionNotFound, StorageError
from ..models import Message, Session, from_ms, now_ms, to_ms
from . import rows
from .base import BaseStorage, apply_changes
from .rows import MESSAGE_COLUMNS, SESSION_COLUMNS, check_schema_version, dt, ms

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

PIP_HINT = "pip install 'pocketping[postgres]'"

#: Key of the advisory lock that serialises schema migrations (any constant bigint).
MIGRATION_LOCK = 0x70636B7470696E67  # "pcktping"

# Each entry moves the schema from version i to i + 1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS pocketping_sessions (
        id TEXT PRIMARY KEY,
        visitor_id TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        last_activity_ms BIGINT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        closed_ms BIGINT,
        metadata JSONB NOT NULL DEFAULT '{}',
        identity JSONB,
        data JSONB NOT NULL DEFAULT '{}',
        stamp_ms BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS pocketping_sessions_by_visitor
        ON pocketping_sessions (visitor_id, created_ms DESC);
    CREATE INDEX IF NOT EXISTS pocketping_sessions_by_activity
        ON pocketping_sessions (status, last_activity_ms DESC);
    CREATE TABLE IF NOT EXISTS pocketping_messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES pocketping_sessions (id) ON DELETE CASCADE,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        sender TEXT NOT NULL,
        content TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'sent',
        delivered_ms BIGINT,
        read_ms BIGINT,
        edited_ms BIGINT,
        deleted_ms BIGINT,
        reply_to TEXT,
        attachments JSONB,
        metadata JSONB
    );
    CREATE UNIQUE INDEX IF NOT EXISTS pocketping_messages_by_created
        ON pocketping_messages (session_id, created_ms);
    CREATE UNIQUE INDEX IF NOT EXISTS pocketping_messages_by_change
        ON pocketping_messages (session_id, updated_ms);
    """,
    # 1: the bridges' durable outbox and key-value map (session <-> thread, message ids, seen updates)
    """
    CREATE TABLE IF NOT EXISTS pocketping_bridge_outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        bridge TEXT NOT NULL,
        session_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_ms BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        claimed_ms BIGINT NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX IF NOT EXISTS pocketping_bridge_outbox_by_line
        ON pocketping_bridge_outbox (bridge, session_id, id) WHERE state <> 'dead';
    CREATE TABLE IF NOT EXISTS pocketping_bridge_keys (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: bridge keys know their session (erased with it); earlier rows learn it from the session
    # or message id in their key (sess_ + 16, msg_ + 16 characters) or their value
    """
    ALTER TABLE pocketping_bridge_keys ADD COLUMN IF NOT EXISTS session_id TEXT;
    UPDATE pocketping_bridge_keys SET session_id = substr(key, strpos(key, ':sess_') + 1, 21)
        WHERE strpos(key, ':sess_') > 0;
    UPDATE pocketping_bridge_keys SET session_id = left(value, 21)
        WHERE session_id IS NULL AND left(value, 5) = 'sess_';
    UPDATE pocketping_bridge_keys k SET session_id = m.session_id FROM pocketping_messages m
        WHERE k.session_id IS NULL AND strpos(k.key, ':msg_') > 0
        AND m.id = substr(k.key, strpos(k.key, ':msg_') + 1, 20);
    CREATE INDEX IF NOT EXISTS pocketping_bridge_keys_by_session ON pocketping_bridge_keys (session_id);
    """,
    # 3: bans by client address (a network) and by verified user id
    """
    CREATE TABLE IF NOT EXISTS pocketping_bans (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        reason TEXT,
        PRIMARY KEY (kind, value)
    );
    """,
    # 4: operator accounts (the record is JSON: name, role, password hash, generation)
    """
    CREATE TABLE IF NOT EXISTS pocketping_operators (
        name_key TEXT PRIMARY KEY,
        record TEXT NOT NULL
    );
    """,
]

#: First key of the two-key advisory locks that serialise ``outbox_add`` per (bridge, session)
#: line; the second key is a hash of the line. (Two-key locks never collide with one-key ones.)
OUTBOX_LOCK_SPACE = 0x70636B74  # "pckt"

# Not dead and no earlier row of its line that is not dead: the head of a (bridge, session) line.
_LINE_HEAD = (
    "o.state <> 'dead' AND NOT EXISTS (SELECT 1 FROM pocketping_bridge_outbox i WHERE i.bridge = o.bridge "
    "AND i.session_id = o.session_id AND i.state <> 'dead' AND i.id < o.id)"
)

_MESSAGE_COLUMNS, _SESSION_COLUMNS, _ms, _dt = MESSAGE_COLUMNS, SESSION_COLUMNS, ms, dt


def _json_text(column: str, path: str) -> str:
    *parents, leaf = path.split(".")
    return "(" + column + "".join(f"->'{p}'" for p in parents) + f"->>'{leaf}')"


_STATS = rows.stats_queries("pocketping_sessions", "pocketping_messages", "%s", _json_text)
_UNANSWERED = rows.unanswered_query("pocketping_sessions", "pocketping_messages")

# (wanted stamp, wanted stamp, session id, message id, *_message_values) -> the stamp taken.
# Parameters are cast: in INSERT ... SELECT they get no type from the target columns.
_SAVE_MESSAGE = (
    "WITH s AS (UPDATE pocketping_sessions SET stamp_ms = GREATEST(stamp_ms + 1, %s::bigint), "
    "last_activity_ms = GREATEST(last_activity_ms, stamp_ms + 1, %s::bigint) WHERE id = %s RETURNING id, stamp_ms) "
    f"INSERT INTO pocketping_messages ({MESSAGE_COLUMNS}) "
    "SELECT %s::text, s.id, s.stamp_ms, s.stamp_ms, %s::text, %s::text, %s::text, %s::bigint, %s::bigint, "
    "%s::bigint, %s::bigint, %s::text, %s::jsonb, %s::jsonb FROM s RETURNING created_ms"
)


def _message_from_row(r: tuple[Any, ...]) -> Message:
    return rows.message_from_row(r)


def _session_from_row(r: tuple[Any, ...]) -> Session:
    return rows.session_from_row(r)


def require_psycopg() -> None:
    """Raise ImportError with the install hint when the ``postgres`` extra is missing."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"PostgreSQL support needs psycopg 3 and psycopg-pool: {PIP_HINT}") from exc


def _json(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return None if value is None else Jsonb(value)


def _message_values(m: Message) -> tuple[Any, ...]:
    return rows.message_values(m, _json)


class PostgresStorage(BaseStorage):
    """Sessions, messages and the bridges' outbox in PostgreSQL (tables ``pocketping_*``).

    ``dsn`` is a libpq connection string or URL (``postgresql://user:pw@host/db``);
    ``min_size`` / ``max_size`` bound the connection pool of each process.
    """

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        require_psycopg()
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("dsn must be a PostgreSQL connection string or URL")
        if min_size < 0 or max_size < max(1, min_size):
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: AsyncConnectionPool | None = None

    def __repr__(self) -> str:
        return "PostgresStorage(<dsn>)"

    # -- plumbing ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            name="pocketping",
            # Autocommit: a one-statement write is its own transaction (no BEGIN / COMMIT round
            # trips); writes of several statements open one explicitly.
            kwargs={"application_name": "pocketping", "autocommit": True},
        )
        await pool.open(wait=True, timeout=30)
        try:
            async with pool.connection() as conn:
                await self._migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StorageError("PostgresStorage is not open: call `await storage.open()` (PocketPing.start does)")
        return self._pool

    @staticmethod
    async def _migrate(conn: AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS pocketping_schema (version INTEGER NOT NULL)")
            row = await (await conn.execute("SELECT version FROM pocketping_schema")).fetchone()
            version = row[0] if row else 0
            check_schema_version(version, len(MIGRATIONS))
            for sql in MIGRATIONS[version:]:
                await conn.execute(sql.encode())  # several statements: simple query protocol
            if row is None:
                await conn.execute("INSERT INTO pocketping_schema VALUES (%s)", (len(MIGRATIONS),))
            elif version != len(MIGRATIONS):
                await conn.execute("UPDATE pocketping_schema SET version = %s", (len(MIGRATIONS),))

    async def _fetchone(self, sql: str, params: tuple[Any, ...] | Mapping[str, Any]) -> tuple[Any, ...] | None:
        async with self.pool.connection() as conn:
            return await (await conn.execute(sql, params)).fetchone()

    async def _fetchall(self, sql: str, params: tuple[Any, ...] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    @staticmethod
    async def _stamp(conn: AsyncConnection[Any], session_id: str, wanted_ms: int) -> int:
        """Take the session's next stamp; locks the session row until commit."""
        cur = await conn.execute(
            "UPDATE pocketping_sessions SET stamp_ms = GREATEST(stamp_ms + 1, %s) WHERE id = %s RETURNING stamp_ms",
            (wanted_ms, session_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        return int(row[0])

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: Session) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO pocketping_sessions ({_SESSION_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                rows.session_values(session, _json),
            )

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._fetchone(f"SELECT {_SESSION_COLUMNS} FROM pocketping_sessions WHERE id = %s", (session_id,))
        return _session_from_row(row) if row else None

    async def update_session(self, session: Session) -> None:
        sid, *values = rows.session_values(session, _json)
        async with self.pool.connection() as conn:
            # last_activity only moves forward: a concurrent message may have moved it already.
            await conn.execute(
                "UPDATE pocketping_sessions SET visitor_id=%s, created_ms=%s, "
                "last_activity_ms=GREATEST(last_activity_ms, %s), status=%s, closed_ms=%s, metadata=%s, "
                "identity=%s, data=%s WHERE id=%s",
                (*values, sid),
            )

    async def list_sessions(self, *, limit: int | None = None, include_closed: bool = False) -> list[Session]:
        where = "" if include_closed else "WHERE status = 'active'"
        rows = await self._fetchall(
            f"SELECT {_SESSION_COLUMNS} FROM pocketping_sessions {where} ORDER BY last_activity_ms DESC LIMIT %s",
            (limit,),
        )
        return [_session_from_row(r) for r in rows]

    async def find_session_by_visitor(self, visitor_id: str) -> Session | None:
        row = await self._fetchone(
            f"SELECT {_SESSION_COLUMNS} FROM pocketping_sessions WHERE visitor_id = %s "
            "ORDER BY created_ms DESC LIMIT 1",
            (visitor_id,),
        )
        return _session_from_row(row) if row else None

    # -- messages ---------------------------------------------------------------------------

    async def save_message(self, session_id: str, message: Message) -> Message:
        # One statement, one round trip: take the session's next stamp (the row lock orders
        # concurrent writers of the session until commit), move its activity, insert.
        wanted = to_ms(message.created_at)
        row = await self._fetchone(_SAVE_MESSAGE, (wanted, wanted, session_id, message.id, *_message_values(message)))
        if row is None:
            raise SessionNotFound(session_id)  # never created, or erased meanwhile
        message.created_at = message.updated_at = from_ms(int(row[0]))
        return message

    async def get_messages(
        self, session_id: str, *, after: datetime | None = None, limit: int | None = None
    ) -> list[Message]:
        sql, params = rows.messages_query("pocketping_messages", "%s", session_id, after, limit)
        return [_message_from_row(r) for r in await self._fetchall(sql, params)]

    async def get_message(self, session_id: str, message_id: str) -> Message | None:
        row = await self._fetchone(
            f"SELECT {_MESSAGE_COLUMNS} FROM pocketping_messages WHERE id = %s AND session_id = %s",
            (message_id, session_id),
        )
        return _message_from_row(row) if row else None

    async def update_message(self, session_id: str, message_id: str, changes: Mapping[str, Any]) -> Message | None:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM pocketping_messages WHERE id = %s AND session_id = %s",
                (message_id, session_id),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            stamp = await self._stamp(conn, session_id, now_ms())
            # Re-read under the session lock: a concurrent change of this message has committed.
            cur = await conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM pocketping_messages WHERE id = %s", (message_id,))
            row = await cur.fetchone()
            assert row is not None
            message = _message_from_row(row)
            apply_changes(message, changes, from_ms(stamp))
            await conn.execute(
                f"UPDATE pocketping_messages SET updated_ms=%s, {rows.message_assignments('%s')} WHERE id = %s",
                (stamp, *_message_values(message), message.id),
            )
        return message

    # -- bridges: outbox and key-value map ---------------------------------------------------

    async def outbox_add(
        self, bridge: str, session_id: str, kind: str, key: str, payload: dict[str, Any], *, due_ms: int = 0
    ) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            # One writer per line at a time, until commit: ids of a line are then visible in id
            # order, so a claimer never runs a later call while an earlier one is uncommitted.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (OUTBOX_LOCK_SPACE, f"{bridge}\x1f{session_id}")
            )
            cur = await conn.execute(
                "INSERT INTO pocketping_bridge_outbox (bridge, session_id, kind, key, payload, due_ms) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (bridge, session_id, kind, key, json.dumps(payload), due_ms),
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def outbox_claim(self, *, now_ms: int, lease_ms: int, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        # SKIP LOCKED: heads another process is claiming (or finishing) right now are left to
        # it; a head whose claim committed meanwhile is re-checked and no longer matches.
        claimed = await self._fetchall(
            "WITH picked AS ("
            f"  SELECT o.id, o.state FROM pocketping_bridge_outbox o WHERE {_LINE_HEAD} "
            "   AND ((o.state = 'pending' AND o.due_ms <= %(now)s) "
            "     OR (o.state = 'inflight' AND o.claimed_ms + %(lease)s <= %(now)s)) "
            "  ORDER BY o.id LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED) "
            "UPDATE pocketping_bridge_outbox u SET state = 'inflight', claimed_ms = %(now)s FROM picked "
            "WHERE u.id = picked.id "
            "RETURNING u.id, u.bridge, u.session_id, u.kind, u.key, u.payload, u.attempts, picked.state",
            {"now": now_ms, "lease": lease_ms, "limit": limit},
        )
        return [rows.outbox_job(r) for r in sorted(claimed, key=lambda r: r[0])]

    async def outbox_done(self, item_id: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM pocketping_bridge_outbox WHERE id = %s", (item_id,))

    async def outbox_retry(self, item_id: int, *, due_ms: int, error: str, dead: bool = False) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE pocketping_bridge_outbox SET attempts = attempts + 1, due_ms = %s, error = %s, state = %s "
                "WHERE id = %s",
                (due_ms, error[:1000].replace("\x00", "\ufffd"), "dead" if dead else "pending", item_id),
            )

    async def outbox_next_due(self) -> int | None:
        row = await self._fetchone(
            f"SELECT min(o.due_ms) FROM pocketping_bridge_outbox o WHERE o.state = 'pending' AND {_LINE_HEAD}", ()
        )
        return None if row is None or row[0] is None else int(row[0])

    async def bridge_key_get(self, key: str) -> str | None:
        row = await self._fetchone("SELECT value FROM pocketping_bridge_keys WHERE key = %s", (key,))
        return row[0] if row else None

    async def bridge_key_set(
        self, key: str, value: str, *, only_new: bool = False, session_id: str | None = None
    ) -> bool:
        conflict = (
            "DO NOTHING" if only_new else "DO UPDATE SET value = EXCLUDED.value, session_id = EXCLUDED.session_id"
        )
        async with self.pool.connection() as conn:
            # Only for a session that exists: the key-share lock waits for an erasure in
            # progress (which locks the session rows first), and then finds no row.
            cur = await conn.execute(
                "INSERT INTO pocketping_bridge_keys (key, value, session_id) SELECT %s, %s, %s::text "
                "WHERE %s::text IS NULL OR EXISTS (SELECT 1 FROM pocketping_sessions WHERE id = %s FOR KEY SHARE) "
                f"ON CONFLICT (key) {conflict}",
                (key, value, session_id, session_id, session_id),
            )
            return cur.rowcount > 0

    async def bridge_key_delete(self, key: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM pocketping_bridge_keys WHERE key = %s", (key,))

    # -- erasure and retention --------------------------------------------------------------

    async def find_sessions_by_visitor(self, visitor_id: str) -> list[Session]:
        rows = await self._fetchall(
            f"SELECT {_SESSION_COLUMNS} FROM pocketping_sessions WHERE visitor_id = %s ORDER BY created_ms",
            (visitor_id,),
        )
        return [_session_from_row(r) for r in rows]

    async def list_inactive_sessions(self, before: datetime, *, limit: int) -> list[str]:
        rows = await self._fetchall(
            "SELECT id FROM pocketping_sessions WHERE status IN ('active', 'closed') AND last_activity_ms < %s "
            "ORDER BY last_activity_ms LIMIT %s",
            (to_ms(before), limit),
        )
        return [r[0] for r in rows]

    async def delete_sessions(self, session_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(session_ids))
        async with self.pool.connection() as conn, conn.transaction():
            # Lock the session rows first: a bridge key written for one of them meanwhile
            # waits for this transaction, then finds the session gone.
            await conn.execute("SELECT id FROM pocketping_sessions WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ids,))
            cur = await conn.execute("DELETE FROM pocketping_messages WHERE session_id = ANY(%s)", (ids,))
            await conn.execute("DELETE FROM pocketping_bridge_outbox WHERE session_id = ANY(%s)", (ids,))
            await conn.execute("DELETE FROM pocketping_bridge_keys WHERE session_id = ANY(%s)", (ids,))
            await conn.execute("DELETE FROM pocketping_sessions WHERE id = ANY(%s)", (ids,))
            return cur.rowcount

    # -- bans by address and by user ------------------------------------------------------------

    async def list_bans(self) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT kind, value, created_ms, reason FROM pocketping_bans", ())
        return [{"kind": k, "value": v, "created_ms": c, "reason": r} for k, v, c, r in rows]

    async def save_ban(self, kind: str, value: str, *, reason: str | None = None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO pocketping_bans (kind, value, created_ms, reason) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (kind, value) DO NOTHING",
                (kind, value, now_ms(), reason),
            )

    async def delete_ban(self, kind: str, value: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM pocketping_bans WHERE kind = %s AND value = %s", (kind, value))

    # -- operator accounts ----------------------------------------------------------------------

    async def list_operators(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in await self._fetchall("SELECT record FROM pocketping_operators", ())]

    async def save_operator(self, record: dict[str, Any]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO pocketping_operators (name_key, record) VALUES (%s, %s) "
                "ON CONFLICT (name_key) DO UPDATE SET record = excluded.record",
                (record["name"].casefold(), json.dumps(record)),
            )

    async def delete_operator(self, name: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM pocketping_operators WHERE name_key = %s", (name.casefold(),))
            return cur.rowcount > 0

    # -- statistics -----------------------------------------------------------------------------

    async def conversation_stats(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        window = (since_ms, until_ms)
        async with self.pool.connection() as conn:

            async def rows_of(sql: str, params: tuple[Any, ...] = window) -> list[tuple[Any, ...]]:
                return await (await conn.execute(sql, params)).fetchall()

            csat = (await rows_of(_STATS["csat"]))[0]
            return {
                "conversations": (await rows_of(_STATS["conversations"]))[0][0],
                "visitor_messages": (await rows_of(_STATS["visitor_messages"]))[0][0],
                "replies": dict(await rows_of(_STATS["replies"])),
                "first_responses": await rows_of(_STATS["first_responses"]),
                "unanswered": (await rows_of(_UNANSWERED, ()))[0][0],
                "csat_count": csat[0],
                "csat_satisfied": csat[1],
            }
