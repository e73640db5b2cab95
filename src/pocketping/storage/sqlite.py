"""SQLite storage: the embedded default. One file, WAL mode, schema created and migrated on
first use. Writes run on one writer thread, several writes that arrive together sharing one
transaction and one fsync (see ``_apply``); reads run at once on a read connection of the
calling thread. Several processes may share the file: writes take SQLite's write lock
(``BEGIN IMMEDIATE``) so stamps stay unique per session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ..errors import SessionNotFound
from ..models import Message, Session, from_ms, now_ms, to_ms
from . import rows
from .base import BaseStorage, apply_changes, next_stamp
from .rows import MESSAGE_COLUMNS, SESSION_COLUMNS, check_schema_version, dt, ms

T = TypeVar("T")

log = logging.getLogger("pocketping")

#: How long a statement waits for another connection's lock.
BUSY_TIMEOUT_MS = 10_000
#: How long the checkpoint after an erasure waits for readers (it blocks writes meanwhile).
CHECKPOINT_WAIT_MS = 1_000

# Each entry moves the schema from version i to i + 1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        visitor_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_activity_ms INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        closed_ms INTEGER,
        metadata TEXT NOT NULL DEFAULT '{}',
        identity TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX IF NOT EXISTS sessions_by_visitor ON sessions (visitor_id, created_ms);
    CREATE INDEX IF NOT EXISTS sessions_by_activity ON sessions (status, last_activity_ms);
    CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        sender TEXT NOT NULL,
        content TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'sent',
        delivered_ms INTEGER,
        read_ms INTEGER,
        edited_ms INTEGER,
        deleted_ms INTEGER,
        reply_to TEXT,
        attachments TEXT,
        metadata TEXT
    );
    CREATE UNIQUE INDEX IF NOT EXISTS messages_by_created ON messages (session_id, created_ms);
    CREATE UNIQUE INDEX IF NOT EXISTS messages_by_change ON messages (session_id, updated_ms);
    """,
    # 1: the bridges' durable outbox and key-value map (session <-> thread, message ids, seen updates)
    """
    CREATE TABLE IF NOT EXISTS bridge_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        bridge TEXT NOT NULL,
        session_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_ms INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        claimed_ms INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX IF NOT EXISTS bridge_outbox_by_line ON bridge_outbox (bridge, session_id, state, id);
    CREATE TABLE IF NOT EXISTS bridge_keys (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: bridge keys know their session (erased with it); earlier rows learn it from the session
    # or message id in their key (sess_ + 16, msg_ + 16 characters) or their value
    """
    ALTER TABLE bridge_keys ADD COLUMN session_id TEXT;
    UPDATE bridge_keys SET session_id = substr(key, instr(key, ':sess_') + 1, 21) WHERE instr(key, ':sess_') > 0;
    UPDATE bridge_keys SET session_id = substr(value, 1, 21) WHERE session_id IS NULL AND substr(value, 1, 5) = 'sess_';
    UPDATE bridge_keys SET session_id = (
        SELECT m.session_id FROM messages m
        WHERE m.id = substr(bridge_keys.key, instr(bridge_keys.key, ':msg_') + 1, 20)
    ) WHERE session_id IS NULL AND instr(key, ':msg_') > 0;
    CREATE INDEX IF NOT EXISTS bridge_keys_by_session ON bridge_keys (session_id);
    """,
    # 3: bans by client address (a network) and by verified user id
    """
    CREATE TABLE IF NOT EXISTS bans (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        reason TEXT,
        PRIMARY KEY (kind, value)
    );
    """,
    # 4: operator accounts (the record is JSON: name, role, password hash, generation)
    """
    CREATE TABLE IF NOT EXISTS operators (
        name_key TEXT PRIMARY KEY,
        record TEXT NOT NULL
    );
    """,
]

_MESSAGE_COLUMNS, _SESSION_COLUMNS, _ms, _dt = MESSAGE_COLUMNS, SESSION_COLUMNS, ms, dt

_STATS = rows.stats_queries("sessions", "messages", "?", lambda column, path: f"json_extract({column}, '$.{path}')")
_UNANSWERED = rows.unanswered_query("sessions", "messages")


def _message_from_row(r: tuple[Any, ...]) -> Message:
    return rows.message_from_row(r, json.loads)


def _session_from_row(r: tuple[Any, ...]) -> Session:
    return rows.session_from_row(r, json.loads)


def _session_params(s: Session) -> tuple[Any, ...]:
    return rows.session_values(s, json.dumps)


#: At most this many writes share one transaction.
BATCH = 128

_Write = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _apply(conn: sqlite3.Connection, batch: list[_Write]) -> list[tuple[bool, Any]]:
    """Run a batch of writes in one transaction; each write's outcome, in order."""
    results: list[tuple[bool, Any]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for op, _, _ in batch:
            conn.execute("SAVEPOINT op")
            try:
                results.append((True, op(conn)))
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                results.append((False, exc))
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
    except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch is stored
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(False, exc)] * len(batch)
    return results


def _bare(conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], Any]) -> tuple[bool, Any]:
    """Run a write that must not be inside a transaction (a WAL checkpoint)."""
    try:
        return True, op(conn)
    except Exception as exc:
        return False, exc


def _answer(batch: list[_Write], results: list[tuple[bool, Any]]) -> None:
    """Hand each write's outcome to its caller's event loop: one wake-up per loop."""
    per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], tuple[bool, Any]]]] = {}
    for (_, future, loop), result in zip(batch, results, strict=True):
        per_loop.setdefault(loop, []).append((future, result))
    for loop, items in per_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[asyncio.Future[Any], tuple[bool, Any]]]) -> None:
    for future, (ok, value) in items:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SQLiteStorage(BaseStorage):
    """Sessions and messages in a SQLite file (default ``pocketping.db``).

    ``synchronous`` is SQLite's durability setting: ``"FULL"`` (default) makes every
    acknowledged message survive a power cut; ``"NORMAL"`` survives a process crash only.
    """

    def __init__(self, path: str | Path = "pocketping.db", *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # An in-memory database exists once per connection: everything goes through the writer.
        self._inline_reads = self.path != ":memory:"

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r})"

    # -- plumbing ---------------------------------------------------------------------------
    #
    # Writes go to one writer thread that owns the write connection. It takes every write
    # waiting at that moment into one transaction (each in its own savepoint, so one failing
    # write undoes only itself) and commits once: concurrent writes share one fsync, and each
    # caller is answered only after the commit that holds its write. Reads run right away on
    # the calling thread, on a read connection of that thread's own: in WAL mode a read never
    # waits for the writer and always sees every committed write.

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _db(self) -> sqlite3.Connection:
        """This thread's connection: the write connection on the writer thread, else a reader."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer is None:
            await self.open()
        if fn == self._write:
            op: Callable[[sqlite3.Connection], T] = args[0]
            return await self._submit(op)
        if self._inline_reads:
            return fn(*args)
        return await self._submit(lambda conn: fn(*args))

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:  # marker for _run
        raise RuntimeError("SQLiteStorage._write is only a marker for _run")

    async def _submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._writes.put((op, future, loop))
        return await future

    def _writer_main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            # Deleted rows are overwritten, not just unlinked: erased text leaves no readable
            # copy in the database file (and a checkpoint after an erasure empties the WAL).
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._migrate(conn)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self._local.conn = conn
        ready.set_result(None)
        try:
            running = True
            while running:
                first = self._writes.get()
                if first is None:
                    break
                if getattr(first[0], "bare", False):
                    _answer([first], [_bare(conn, first[0])])
                    continue
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        item = self._writes.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        running = False
                        break
                    if getattr(item[0], "bare", False):  # after the batch before it
                        _answer(batch, _apply(conn, batch))
                        batch = []
                        _answer([item], [_bare(conn, item[0])])
                        break
                    batch.append(item)
                if not batch:
                    continue
                _answer(batch, _apply(conn, batch))
        finally:
            conn.close()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS pocketping_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM pocketping_schema").fetchone()
            version = row[0] if row else 0
            check_schema_version(version, len(MIGRATIONS))
            for sql in MIGRATIONS[version:]:
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO pocketping_schema VALUES (?)", (len(MIGRATIONS),))
            else:
                conn.execute("UPDATE pocketping_schema SET version = ?", (len(MIGRATIONS),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        with self._lock:
            if self._writer is not None:
                return
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._writer = threading.Thread(
                target=self._writer_main, args=(ready,), name="pocketping-sqlite", daemon=True
            )
            self._writer.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._writer = None
            raise

    async def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
            readers, self._readers = self._readers, []
        if writer is None:
            return
        self._writes.put(None)
        await asyncio.get_running_loop().run_in_executor(None, writer.join)
        for conn in readers:
            conn.close()
        self._local = threading.local()

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: Session) -> None:
        params = _session_params(session)

        def op(c: sqlite3.Connection) -> None:
            c.execute(f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", params)

        await self._run(self._write, op)

    async def has_session(self, session_id: str) -> bool:
        def op() -> bool:
            return self._db().execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None

        return await self._run(op)

    async def get_session(self, session_id: str) -> Session | None:
        def op() -> Session | None:
            row = self._db().execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
            return _session_from_row(row) if row else None

        return await self._run(op)

    async def update_session(self, session: Session) -> None:
        p = _session_params(session)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE sessions SET visitor_id=?, created_ms=?, last_activity_ms=?, status=?, "
                "closed_ms=?, metadata=?, identity=?, data=? WHERE id=?",
                (*p[1:], p[0]),
            )

        await self._run(self._write, op)

    async def list_sessions(self, *, limit: int | None = None, include_closed: bool = False) -> list[Session]:
        where = "" if include_closed else "WHERE status = 'active'"

        def op() -> list[Session]:
            rows = (
                self._db()
                .execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions {where} ORDER BY last_activity_ms DESC LIMIT ?",
                    (-1 if limit is None else limit,),
                )
                .fetchall()
            )
            return [_session_from_row(r) for r in rows]

        return await self._run(op)

    async def find_session_by_visitor(self, visitor_id: str) -> Session | None:
        def op() -> Session | None:
            row = (
                self._db()
                .execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE visitor_id = ? ORDER BY created_ms DESC LIMIT 1",
                    (visitor_id,),
                )
                .fetchone()
            )
            return _session_from_row(row) if row else None

        return await self._run(op)

    # -- messages ---------------------------------------------------------------------------

    @staticmethod
    def _last_stamp(c: sqlite3.Connection, session_id: str) -> int | None:
        row = c.execute("SELECT max(updated_ms) FROM messages WHERE session_id = ?", (session_id,)).fetchone()
        return row[0] if row else None

    async def save_message(self, session_id: str, message: Message) -> Message:
        wanted = to_ms(message.created_at)

        def op(c: sqlite3.Connection) -> None:
            stamp = next_stamp(self._last_stamp(c, session_id), wanted)
            if c.execute("UPDATE sessions SET last_activity_ms = ? WHERE id = ?", (stamp, session_id)).rowcount == 0:
                raise SessionNotFound(session_id)  # erased meanwhile
            c.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (message.id, session_id, stamp, stamp, *rows.message_values(message, json.dumps)),
            )
            message.created_at = message.updated_at = from_ms(stamp)

        await self._run(self._write, op)
        return message

    async def get_messages(
        self, session_id: str, *, after: datetime | None = None, limit: int | None = None
    ) -> list[Message]:
        sql, params = rows.messages_query("messages", "?", session_id, after, -1 if limit is None else limit)

        def op() -> list[Message]:
            return [_message_from_row(r) for r in self._db().execute(sql, params).fetchall()]

        return await self._run(op)

    async def get_message(self, session_id: str, message_id: str) -> Message | None:
        def op() -> Message | None:
            row = (
                self._db()
                .execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND session_id = ?",
                    (message_id, session_id),
                )
                .fetchone()
            )
            return _message_from_row(row) if row else None

        return await self._run(op)

    async def update_message(self, session_id: str, message_id: str, changes: Mapping[str, Any]) -> Message | None:
        def op(c: sqlite3.Connection) -> Message | None:
            row = c.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND session_id = ?",
                (message_id, session_id),
            ).fetchone()
            if row is None:
                return None
            message = _message_from_row(row)
            stamp = from_ms(next_stamp(self._last_stamp(c, session_id)))
            apply_changes(message, changes, stamp)
            c.execute(
                f"UPDATE messages SET updated_ms=?, {rows.message_assignments('?')} WHERE id = ?",
                (to_ms(stamp), *rows.message_values(message, json.dumps), message.id),
            )
            return message

        return await self._run(self._write, op)

    # -- bridges: outbox and key-value map ---------------------------------------------------

    async def outbox_add(
        self, bridge: str, session_id: str, kind: str, key: str, payload: dict[str, Any], *, due_ms: int = 0
    ) -> int:
        params = (bridge, session_id, kind, key, json.dumps(payload), due_ms)

        def op(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO bridge_outbox (bridge, session_id, kind, key, payload, due_ms) VALUES (?,?,?,?,?,?)",
                params,
            )
            return int(cur.lastrowid or 0)

        return await self._run(self._write, op)

    async def outbox_claim(self, *, now_ms: int, lease_ms: int, limit: int) -> list[dict[str, Any]]:
        def op(c: sqlite3.Connection) -> list[dict[str, Any]]:
            claimed = c.execute(
                f"SELECT {rows.OUTBOX_COLUMNS} FROM bridge_outbox o "
                "WHERE state != 'dead' AND id = (SELECT min(id) FROM bridge_outbox i WHERE i.bridge = o.bridge "
                "AND i.session_id = o.session_id AND i.state != 'dead') "
                "AND ((state = 'pending' AND due_ms <= ?) OR (state = 'inflight' AND claimed_ms + ? <= ?)) "
                "ORDER BY id LIMIT ?",
                (now_ms, lease_ms, now_ms, limit),
            ).fetchall()
            out = []
            for r in claimed:
                c.execute("UPDATE bridge_outbox SET state = 'inflight', claimed_ms = ? WHERE id = ?", (now_ms, r[0]))
                out.append(rows.outbox_job(r))
            return out

        return await self._run(self._write, op)

    async def outbox_done(self, item_id: int) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM bridge_outbox WHERE id = ?", (item_id,))

        await self._run(self._write, op)

    async def outbox_retry(self, item_id: int, *, due_ms: int, error: str, dead: bool = False) -> None:
        state = "dead" if dead else "pending"

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE bridge_outbox SET attempts = attempts + 1, due_ms = ?, error = ?, state = ? WHERE id = ?",
                (due_ms, error[:1000], state, item_id),
            )

        await self._run(self._write, op)

    async def outbox_next_due(self) -> int | None:
        def op() -> int | None:
            row = (
                self._db()
                .execute(
                    "SELECT min(due_ms) FROM bridge_outbox o WHERE state = 'pending' AND id = (SELECT min(id) "
                    "FROM bridge_outbox i WHERE i.bridge = o.bridge AND i.session_id = o.session_id "
                    "AND i.state != 'dead')"
                )
                .fetchone()
            )
            return row[0] if row else None

        return await self._run(op)

    async def bridge_key_get(self, key: str) -> str | None:
        def op() -> str | None:
            row = self._db().execute("SELECT value FROM bridge_keys WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        return await self._run(op)

    async def bridge_key_set(
        self, key: str, value: str, *, only_new: bool = False, session_id: str | None = None
    ) -> bool:
        verb = "INSERT OR IGNORE" if only_new else "INSERT OR REPLACE"

        def op(c: sqlite3.Connection) -> bool:
            # Only for a session that exists: a delivery that outlives an erasure keeps nothing.
            sql = (
                f"{verb} INTO bridge_keys (key, value, session_id) SELECT ?, ?, ? "
                "WHERE ? IS NULL OR EXISTS (SELECT 1 FROM sessions WHERE id = ?)"
            )
            return c.execute(sql, (key, value, session_id, session_id, session_id)).rowcount > 0

        return await self._run(self._write, op)

    async def bridge_key_delete(self, key: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM bridge_keys WHERE key = ?", (key,))

        await self._run(self._write, op)

    # -- erasure and retention --------------------------------------------------------------

    async def find_sessions_by_visitor(self, visitor_id: str) -> list[Session]:
        def op() -> list[Session]:
            sql = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE visitor_id = ? ORDER BY created_ms"
            return [_session_from_row(r) for r in self._db().execute(sql, (visitor_id,)).fetchall()]

        return await self._run(op)

    async def list_inactive_sessions(self, before: datetime, *, limit: int) -> list[str]:
        def op() -> list[str]:
            sql = (
                "SELECT id FROM sessions WHERE status IN ('active', 'closed') AND last_activity_ms < ? "
                "ORDER BY last_activity_ms LIMIT ?"
            )
            return [r[0] for r in self._db().execute(sql, (to_ms(before), limit)).fetchall()]

        return await self._run(op)

    async def delete_sessions(self, session_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(session_ids))

        def op(c: sqlite3.Connection) -> int:
            deleted = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                deleted += c.execute(f"DELETE FROM messages WHERE session_id IN ({marks})", chunk).rowcount
                c.execute(f"DELETE FROM bridge_outbox WHERE session_id IN ({marks})", chunk)
                c.execute(f"DELETE FROM bridge_keys WHERE session_id IN ({marks})", chunk)
                c.execute(f"DELETE FROM sessions WHERE id IN ({marks})", chunk)
            return deleted

        deleted: int = await self._run(self._write, op)
        await self._checkpoint()
        return deleted

    async def _checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it, so that erased rows (already
        overwritten in the file by ``secure_delete``) leave no older copy in ``-wal``."""

        def op(c: sqlite3.Connection) -> tuple[int, int, int]:
            # It holds the write lock while it waits for readers: wait at most a second.
            c.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
            try:
                busy, frames, copied = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                c.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return int(busy), int(frames), int(copied)

        op.bare = True  # type: ignore[attr-defined]
        busy, _frames, _copied = await self._run(self._write, op)
        if busy:
            log.warning(
                "after an erasure, the WAL of %s could not be emptied (another connection is reading); "
                "erased rows may stay in its -wal file until the next checkpoint",
                self.path,
            )

    # -- bans by address and by user ------------------------------------------------------------

    async def list_bans(self) -> list[dict[str, Any]]:
        def op() -> list[dict[str, Any]]:
            rows = self._db().execute("SELECT kind, value, created_ms, reason FROM bans").fetchall()
            return [{"kind": k, "value": v, "created_ms": c, "reason": r} for k, v, c, r in rows]

        return await self._run(op)

    async def save_ban(self, kind: str, value: str, *, reason: str | None = None) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR IGNORE INTO bans (kind, value, created_ms, reason) VALUES (?, ?, ?, ?)",
                (kind, value, now_ms(), reason),
            )

        await self._run(self._write, op)

    async def delete_ban(self, kind: str, value: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value))

        await self._run(self._write, op)

    # -- operator accounts ----------------------------------------------------------------------

    async def list_operators(self) -> list[dict[str, Any]]:
        def op() -> list[dict[str, Any]]:
            return [json.loads(r[0]) for r in self._db().execute("SELECT record FROM operators").fetchall()]

        return await self._run(op)

    async def save_operator(self, record: dict[str, Any]) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO operators (name_key, record) VALUES (?, ?) "
                "ON CONFLICT (name_key) DO UPDATE SET record = excluded.record",
                (record["name"].casefold(), json.dumps(record)),
            )

        await self._run(self._write, op)

    async def delete_operator(self, name: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM operators WHERE name_key = ?", (name.casefold(),)).rowcount > 0

        return bool(await self._run(self._write, op))

    # -- statistics -----------------------------------------------------------------------------

    async def conversation_stats(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        def op() -> dict[str, Any]:
            db, window = self._db(), (since_ms, until_ms)
            csat = db.execute(_STATS["csat"], window).fetchone()
            return {
                "conversations": db.execute(_STATS["conversations"], window).fetchone()[0],
                "visitor_messages": db.execute(_STATS["visitor_messages"], window).fetchone()[0],
                "replies": dict(db.execute(_STATS["replies"], window).fetchall()),
                "first_responses": db.execute(_STATS["first_responses"], window).fetchall(),
                "unanswered": db.execute(_UNANSWERED).fetchone()[0],
                "csat_count": csat[0],
                "csat_satisfied": csat[1],
            }

        return await self._run(op)
