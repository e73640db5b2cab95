"""Operator accounts and their console sign-ins.

Accounts live in the storage (``list_operators`` / ``save_operator`` / ``delete_operator``), so
every process and host shares them. Passwords are stored as scrypt hashes (memory-hard,
``hashlib.scrypt``: 16 MiB and about 50 ms per check) and compared in constant time. A sign-in
is a random token kept by the browser in an HttpOnly cookie; the server keeps only its SHA-256
in the storage's key map, with the account's ``generation``, so a new password or a removed
account ends every sign-in at once, on every process.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .errors import InvalidInput, RateLimited
from .storage.base import BaseStorage

ROLES = ("admin", "agent")
#: scrypt cost: N=2**14, r=8 (16 MiB), p=1.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8
#: How long a console sign-in lasts.
SIGN_IN_DAYS = 7
#: Sign-in attempts allowed, per name and per client address.
ATTEMPTS_PER_NAME = "5/minute"
ATTEMPTS_PER_ADDRESS = "20/minute"
_NAME = re.compile(r"^[\w.-]{1,32}$")


@dataclass(frozen=True)
class Operator:
    """A person who answers: ``name`` (shown to visitors on their replies) and ``role``
    (``admin``: manages operators and sees stats; ``agent``)."""

    name: str
    role: str
    created_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role}


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise InvalidInput(
            f"an operator name is 1 to 32 letters, digits, '.', '_' or '-' (it is used in @mentions), not {name!r}"
        )
    return name.strip()


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be 'admin' or 'agent', not {role!r}")
    return str(role)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` (base64) for ``password``."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password must be at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@functools.cache
def _dummy_hash() -> str:
    """Compared against when a name is unknown, so a wrong name costs as long as a wrong password."""
    return hash_password("not a password of anyone")


def _token_key(token: str) -> str:
    return "console:signin:" + hashlib.sha256(token.encode()).hexdigest()


class OperatorBook:
    """The accounts of one app, and its console sign-ins (``pp.operators``)."""

    def __init__(self, storage: BaseStorage, keys: Any) -> None:
        self.storage = storage
        self._keys = keys  # a callable giving the key-map storage (the outbox's)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_name = parse(ATTEMPTS_PER_NAME)
        self._per_address = parse(ATTEMPTS_PER_ADDRESS)

    # -- accounts ---------------------------------------------------------------------------

    async def _record(self, name: str) -> dict[str, Any] | None:
        key = name.casefold()
        return next((r for r in await self.storage.list_operators() if r["name"].casefold() == key), None)

    async def list(self) -> list[Operator]:
        records = sorted(await self.storage.list_operators(), key=lambda r: r["name"].casefold())
        return [_operator(r) for r in records]

    async def get(self, name: str) -> Operator | None:
        record = await self._record(name)
        return _operator(record) if record else None

    async def any(self) -> bool:
        try:
            return bool(await self.storage.list_operators())
        except Exception:  # a storage without accounts: the console token alone
            return False

    async def add(self, name: str, password: str, role: str = "agent") -> Operator:
        name, role = check_name(name), check_role(role)
        if await self._record(name) is not None:
            raise InvalidInput(f"an operator named {name!r} exists already")
        record = {
            "name": name,
            "role": role,
            "password_hash": await asyncio.to_thread(hash_password, password),
            "generation": 1,
            "created_ms": int(time.time() * 1000),
        }
        await self.storage.save_operator(record)
        return _operator(record)

    async def remove(self, name: str) -> None:
        if not await self.storage.delete_operator(check_name(name)):
            raise InvalidInput(f"no operator is named {name!r}")

    async def set_password(self, name: str, password: str) -> None:
        record = await self._record(check_name(name))
        if record is None:
            raise InvalidInput(f"no operator is named {name!r}")
        record["password_hash"] = await asyncio.to_thread(hash_password, password)
        record["generation"] = int(record.get("generation", 1)) + 1  # ends every sign-in
        await self.storage.save_operator(record)

    async def set_role(self, name: str, role: str) -> None:
        record = await self._record(check_name(name))
        if record is None:
            raise InvalidInput(f"no operator is named {name!r}")
        record["role"] = check_role(role)
        await self.storage.save_operator(record)

    # -- signing in -------------------------------------------------------------------------

    def check_attempt(self, name: str, address: str) -> None:
        """:class:`RateLimited` when ``name`` or ``address`` tried too often."""
        for item, key in ((self._per_name, f"name:{name.casefold()}"), (self._per_address, f"addr:{address}")):
            if not self._limiter.hit(item, "signin", key):
                reset = self._limiter.get_window_stats(item, "signin", key).reset_time
                raise RateLimited(
                    "too many sign-in attempts; wait a minute", retry_after=max(1, int(reset - time.time()))
                )

    async def authenticate(self, name: str, password: str) -> Operator | None:
        record = await self._record(name) if isinstance(name, str) and name.strip() else None
        stored = record["password_hash"] if record else _dummy_hash()
        ok = await asyncio.to_thread(password_matches, password if isinstance(password, str) else "", stored)
        return _operator(record) if ok and record else None

    async def sign_in(self, operator: Operator, *, token_sign_in: bool = False) -> str:
        """A new sign-in for ``operator``; returns its token (for the cookie)."""
        token = secrets.token_urlsafe(32)
        record = await self._record(operator.name) if not token_sign_in else None
        value = {
            "name": operator.name,
            "role": operator.role,
            "generation": record.get("generation", 1) if record else 0,
            "expires_ms": int((time.time() + SIGN_IN_DAYS * 86400) * 1000),
            "token": token_sign_in,
        }
        await self._keys().bridge_key_set(_token_key(token), json.dumps(value))
        return token

    async def signed_in(self, token: str | None) -> Operator | None:
        """The operator a sign-in token belongs to, if it is still valid."""
        if not token:
            return None
        raw = await self._keys().bridge_key_get(_token_key(token))
        if not raw:
            return None
        value = json.loads(raw)
        if value["expires_ms"] < time.time() * 1000:
            return None
        if value.get("token"):
            return Operator(value["name"], value["role"])
        record = await self._record(value["name"])
        if record is None or record.get("generation", 1) != value["generation"]:
            return None
        return _operator(record)

    async def sign_out(self, token: str | None) -> None:
        if token:
            await self._keys().bridge_key_delete(_token_key(token))


def _operator(record: dict[str, Any]) -> Operator:
    created = record.get("created_ms")
    return Operator(
        name=record["name"],
        role=record["role"],
        created_at=datetime.fromtimestamp(created / 1000, UTC) if created else None,
    )
