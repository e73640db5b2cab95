"""Real services for the tests: a PostgreSQL cluster, a redis-server and uvicorn processes.

Each runs as a child process on 127.0.0.1 with a free port, in a temporary directory, and is
stopped by its PID. A missing server binary is a failure with the command that installs it,
never a skip. ``shared_postgres()`` starts one cluster for the whole test session (stopped by
``stop_all()``, which conftest calls at the end); ``fresh_database()`` gives each test its
own database in it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s:\n{_tail(log)}")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop_pid(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop one child process by its PID: ``sig``, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _binary(name: str, install: str) -> str:
    found = shutil.which(name)
    if found is None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
            return str(candidate)
        raise RuntimeError(f"{name} is not installed; scripts/test installs it ({install})")
    return found


class PostgresServer:
    """A throw-away PostgreSQL cluster (initdb in a temporary directory, trust auth on
    127.0.0.1 and a unix socket in that directory). Run as the ``postgres`` OS user when the
    tests run as root, since PostgreSQL refuses to run as root."""

    def __init__(self) -> None:
        self.initdb = _binary("initdb", "apt-get install postgresql")
        self.postgres = _binary("postgres", "apt-get install postgresql")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pocketping-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.log = self.dir / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PostgresServer:
        data = self.dir / "data"
        subprocess.run(
            [self.initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-locale"],
            check=True,
            capture_output=True,
            timeout=120,
            **self.user,
        )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.postgres,
                    "-D", str(data),
                    "-p", str(self.port),
                    "-k", str(self.dir),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                    "-c", "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **self.user,
            )  # fmt: skip
        _wait_port(self.port, self.proc, "postgres", self.log)
        deadline = time.monotonic() + 30
        while True:  # the port opens a moment before connections are accepted
            try:
                self.execute("SELECT 1")
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def execute(self, sql: str, params: tuple[Any, ...] = (), dbname: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        stop_pid(self.proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A redis-server with no persistence on 127.0.0.1:<free port>; ``restart()`` keeps the port."""

    def __init__(self) -> None:
        self.binary = _binary("redis-server", "apt-get install redis-server")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pocketping-redis-"))
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait_port(self.port, self.proc, "redis-server", self.log)
        return self

    def kill(self) -> None:
        stop_pid(self.proc, signal.SIGKILL)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class AppProcess:
    """``python -m uvicorn <app>`` in a child process, configured by environment variables."""

    def __init__(self, app: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.app = app
        self.port = free_port()
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log = log_dir / f"app-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/test/health", timeout: float = 30) -> AppProcess:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning", "--no-access-log"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait_port(self.port, self.proc, self.app, self.log, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.url + ready_path, timeout=2)
                if r.status_code == 200 and r.json().get("ready"):
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.app} on port {self.port} did not become ready:\n{_tail(self.log)}")

    def output(self) -> str:
        return _tail(self.log, 80)

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None


_shared: dict[str, Any] = {}


def shared_postgres() -> PostgresServer:
    """One cluster for the whole test session, started on first use."""
    if "postgres" not in _shared:
        _shared["postgres"] = PostgresServer().start()
    server: PostgresServer = _shared["postgres"]
    return server


def fresh_database() -> str:
    """The DSN of a new, empty database in the shared cluster."""
    return shared_postgres().create_database()


def stop_all() -> None:
    for name in list(_shared):
        _shared.pop(name).stop()
