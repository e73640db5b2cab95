"""Operator accounts: stored hashed in the storage, signed in with a cookie on a real server,
Origin-checked, rate-limited, ended by sign-out, a new password or removal; the CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pocketping import InvalidInput, PocketPing, SQLiteStorage

from .conftest import connect

PASSWORD = "correct horse battery"


def make_pp(tmp_path: Path, **kw: object) -> PocketPing:
    return PocketPing(storage=SQLiteStorage(tmp_path / "pp.db"), rate_limits=None, **kw)  # type: ignore[arg-type]


def sign_in(base: str, name: str, password: str, origin: str | None = None) -> httpx.Response:
    headers = {"Origin": origin or base.split("/pocketping")[0]}
    return httpx.post(f"{base}/console/signin", data={"name": name, "password": password}, headers=headers)


def test_accounts_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    pp = make_pp(tmp_path)
    ann = pp.sync.add_operator("Ann", password=PASSWORD, role="admin")
    assert (ann.name, ann.role, ann.is_admin) == ("Ann", "admin", True)
    pp.sync.add_operator("bo.b", password=PASSWORD)
    assert [(o.name, o.role) for o in pp.sync.list_operators()] == [("Ann", "admin"), ("bo.b", "agent")]
    with pytest.raises(InvalidInput, match="exists already"):
        pp.sync.add_operator("ann", password=PASSWORD)
    with pytest.raises(InvalidInput, match="role"):
        pp.sync.add_operator("Cy", password=PASSWORD, role="owner")
    with pytest.raises(InvalidInput, match="at least 8"):
        pp.sync.add_operator("Cy", password="short")
    with pytest.raises(InvalidInput, match="@mentions"):
        pp.sync.add_operator("Ann Smith", password=PASSWORD)
    with pytest.raises(InvalidInput, match="no operator"):
        pp.sync.remove_operator("Nobody")
    assert pp.sync.run(pp.operators.authenticate("ANN", PASSWORD)) == pp.sync.run(pp.operators.get("Ann"))
    assert pp.sync.run(pp.operators.authenticate("Ann", PASSWORD + "x")) is None
    assert pp.sync.run(pp.operators.authenticate("Nobody", PASSWORD)) is None
    pp.sync.remove_operator("bo.b")
    pp.sync.stop()
    rows = sqlite3.connect(tmp_path / "pp.db").execute("SELECT record FROM operators").fetchall()
    assert len(rows) == 1 and "scrypt$16384$8$1$" in rows[0][0] and PASSWORD not in rows[0][0]


def test_signing_in_replying_with_a_name_and_signing_out(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    pp = make_pp(tmp_path)
    pp.sync.add_operator("Ann", password=PASSWORD)
    base = serve(pp)
    origin = base.split("/pocketping")[0]
    page = httpx.get(f"{base}/console")
    assert page.status_code == 401 and 'for="name">Name' in page.text and 'for="password">Password' in page.text
    assert ">Sign in</button>" in page.text and 'method="post"' in page.text

    wrong = sign_in(base, "Ann", "not the password")
    assert wrong.status_code == 401 and "Wrong name or password." in wrong.text and "set-cookie" not in wrong.headers
    assert sign_in(base, "Ann", PASSWORD, origin="https://evil.example").status_code == 403

    ok = sign_in(base, "Ann", PASSWORD)
    assert ok.status_code == 303 and ok.headers["location"] == "../console"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/pocketping/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS adds it
    assert PASSWORD not in ok.headers["location"]
    jar = {"pp_console": ok.cookies["pp_console"]}
    with httpx.Client(base_url=base, cookies=jar) as http:
        assert http.get("/console").status_code == 200
        assert http.get("/console/api/me").json() == {"operator": {"name": "Ann", "role": "agent"}}
        sid = connect(http)["sessionId"]
        api = f"/console/api/sessions/{sid}/messages"
        # State-changing requests need the console's own Origin.
        assert http.post(api, json={"content": "Hi"}).status_code == 403
        assert http.post(api, json={"content": "Hi"}, headers={"Origin": "https://evil.example"}).status_code == 403
        r = http.post(api, json={"content": "Hi, Ann here."}, headers={"Origin": origin})
        assert r.status_code == 200, r.text
        assert pp.sync.get_messages(sid)[-1].metadata == {"source": "console", "operatorName": "Ann"}
        # Signing out ends that sign-in on the server.
        assert http.post("/console/signout", headers={"Origin": origin}).status_code == 303
    with httpx.Client(base_url=base, cookies=jar) as http:
        assert http.get("/console/api/me").status_code == 401


def test_a_new_password_or_a_removal_ends_every_sign_in(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    pp = make_pp(tmp_path)
    pp.sync.add_operator("Ann", password=PASSWORD)
    pp.sync.add_operator("Bob", password=PASSWORD)
    base = serve(pp)
    ann = {"pp_console": sign_in(base, "Ann", PASSWORD).cookies["pp_console"]}
    bob = {"pp_console": sign_in(base, "Bob", PASSWORD).cookies["pp_console"]}
    assert httpx.get(f"{base}/console/api/me", cookies=ann).status_code == 200
    pp.sync.set_operator_password("Ann", "another good password")
    assert httpx.get(f"{base}/console/api/me", cookies=ann).status_code == 401
    assert sign_in(base, "Ann", "another good password").status_code == 303
    pp.sync.remove_operator("Bob")
    assert httpx.get(f"{base}/console/api/me", cookies=bob).status_code == 401


def test_sign_in_attempts_are_limited_per_name(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    pp = make_pp(tmp_path)
    pp.sync.add_operator("Ann", password=PASSWORD)
    base = serve(pp)
    answers = [sign_in(base, "Ann", f"guess {i}").status_code for i in range(6)]
    assert answers == [401] * 5 + [429]
    limited = sign_in(base, "Ann", PASSWORD)
    assert limited.status_code == 429 and limited.json()["error"] and int(limited.headers["retry-after"]) >= 1
    assert sign_in(base, "Other", "whatever").status_code == 401  # another name is not limited by Ann's


def test_the_console_token_still_signs_in_alone(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    pp = make_pp(tmp_path, console_token="tok-0123456789abcdef")
    base = serve(pp)
    page = httpx.get(f"{base}/console")
    assert page.status_code == 401 and "Console token" in page.text
    origin = {"Origin": base.split("/pocketping")[0]}
    ok = httpx.post(f"{base}/console/signin", data={"token": "tok-0123456789abcdef"}, headers=origin)
    assert ok.status_code == 303 and "HttpOnly" in ok.headers["set-cookie"]
    # The demo's address with the token signs in and drops the token from the URL.
    link = httpx.get(f"{base}/console?token=tok-0123456789abcdef")
    assert link.status_code == 303 and link.headers["location"] == "console" and "pp_console" in link.cookies
    # Scripts: the token as a bearer header.
    bearer = {"Authorization": "Bearer tok-0123456789abcdef"}
    assert httpx.get(f"{base}/console/api/sessions", headers=bearer).status_code == 200
    assert httpx.get(f"{base}/console/api/sessions", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_cli_manages_accounts_in_the_apps_storage(serve: Callable[[PocketPing], str], tmp_path: Path) -> None:
    env = {**os.environ, "PP_DB": str(tmp_path / "pp.db")}
    exe = Path(sys.executable).with_name("pocketping")

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = [str(exe), "operator", *args, "--app", "tests.apps.accounts_app:pp"]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=60)

    added = cli("add", "Ann", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0 and "added Ann (admin)" in added.stdout and PASSWORD not in added.stdout
    assert cli("add", "Ann", "--password-stdin", stdin=PASSWORD + "\n").returncode == 2
    # A running server on the same storage sees the account at once.
    pp = make_pp(tmp_path)
    base = serve(pp)
    assert sign_in(base, "Ann", PASSWORD).status_code == 303
    assert cli("passwd", "Ann", "--password-stdin", stdin="a brand new password\n").returncode == 0
    assert sign_in(base, "Ann", PASSWORD).status_code == 401
    assert sign_in(base, "Ann", "a brand new password").status_code == 303
    removed = cli("remove", "Ann")
    assert removed.returncode == 0 and "removed Ann" in removed.stdout
    assert cli("remove", "Ann").returncode == 2
