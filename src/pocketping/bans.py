"""Bans by client address and by verified user id, beside the per-session ban.

``pp.ban(session_id)`` marks one session (stored with it). :class:`BanBook` keeps the other
two kinds: address bans (an address or CIDR range; an IPv6 client's ``/64`` when taken from a
session) and verified-user bans (the ``id`` of an identity your server signed). They are stored
(the storage's optional ``list_bans``, ``save_ban`` and ``delete_ban``), held in memory for the
checks, which cost a set lookup, and read again every ``refresh`` seconds so that a ban made on
one process reaches the others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import addresses
from .errors import InvalidInput, StorageCapabilityError
from .models import from_ms, iso
from .storage.base import BaseStorage, missing_methods

log = logging.getLogger("pocketping")

KINDS = ("address", "user")
BAN_NEEDS = ("list_bans", "save_ban", "delete_ban")

#: Seconds between two reads of the stored bans (bans made by other processes apply after it).
REFRESH = 5.0


@dataclass(frozen=True)
class Ban:
    """One stored ban: ``kind`` is ``"address"`` (``value`` a network such as
    ``203.0.113.7/32`` or ``2001:db8:1:2::/64``) or ``"user"`` (a verified user id)."""

    kind: str
    value: str
    created_at: datetime
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "createdAt": iso(self.created_at), "reason": self.reason}


def address_value(address: str) -> str:
    """The stored form of an address ban: the network ``address`` names, canonical."""
    if not isinstance(address, str) or not address.strip():
        raise InvalidInput("address must be an IP address or CIDR range such as 203.0.113.0/24")
    try:
        return str(addresses.network(address))
    except ValueError:
        raise InvalidInput(f"{address!r} is not an IP address or CIDR range such as 203.0.113.0/24") from None


def user_value(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInput("user_id must be a non-empty string")
    return user_id


class BanBook:
    """The address and user bans of one app, in memory, kept in step with the storage."""

    def __init__(self, storage: BaseStorage, *, refresh: float = REFRESH) -> None:
        self.storage = storage
        self.refresh = refresh
        self.supported = not missing_methods(storage, BAN_NEEDS)
        self._bans: dict[tuple[str, str], Ban] = {}
        # (IP version, prefix length) -> network numbers banned at that length: a check masks
        # the address once per length in use.
        self._networks: dict[tuple[int, int], set[int]] = {}
        self._users: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        # Bumped by every change made here: a reload that began before one is stale.
        self._generation = 0

    @property
    def active(self) -> bool:
        """Whether any address is banned (the front skips the check otherwise)."""
        return bool(self._networks)

    def address_banned(self, ip: str | None) -> bool:
        if not self._networks or not ip:
            return False
        address = addresses.parse(ip)
        if address is None:
            return False
        number = int(address)
        bits = address.max_prefixlen
        for (version, length), banned in self._networks.items():
            if version == address.version and (number >> (bits - length) << (bits - length)) in banned:
                return True
        return False

    def user_banned(self, user_id: str | None) -> bool:
        return bool(self._users) and user_id in self._users

    def _index(self, bans: Iterable[Ban]) -> None:
        found = {(b.kind, b.value): b for b in bans}
        networks: dict[tuple[int, int], set[int]] = {}
        for kind, value in found:
            if kind == "address":
                net = ipaddress.ip_network(value)
                networks.setdefault((net.version, net.prefixlen), set()).add(int(net.network_address))
        self._bans = found
        self._networks = networks
        self._users = {value for kind, value in found if kind == "user"}

    def _require(self, what: str) -> None:
        if not self.supported:
            raise StorageCapabilityError(self.storage, missing_methods(self.storage, BAN_NEEDS), what)

    async def load(self) -> None:
        """Read the stored bans (start, then every ``refresh`` seconds)."""
        if not self.supported:
            return
        generation = self._generation
        rows = await self.storage.list_bans()
        if generation == self._generation:
            self._index(_ban_of(row) for row in rows)

    async def add(self, kind: str, value: str, reason: str | None = None) -> Ban:
        self._require(f"ban by {kind}")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            raise InvalidInput("reason must be text of at most 500 characters")
        ban = Ban(kind, value, datetime.now(UTC), reason)
        self._generation += 1
        await self.storage.save_ban(kind, value, reason=reason)
        self._index([*self._bans.values(), ban])
        return ban

    async def remove(self, kind: str, value: str) -> bool:
        """Lift a ban; False if there was none."""
        self._require(f"unban by {kind}")
        existed = (kind, value) in self._bans
        self._generation += 1
        await self.storage.delete_ban(kind, value)
        self._index(b for key, b in self._bans.items() if key != (kind, value))
        return existed

    def list(self) -> list[Ban]:
        return sorted(self._bans.values(), key=lambda b: b.created_at)

    def start(self) -> None:
        if self.supported and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="pocketping-bans")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.load()
            except Exception as exc:  # keep the bans known so far
                log.warning("could not read the stored bans (%s); keeping those known", type(exc).__name__)


def _ban_of(row: Any) -> Ban:
    if isinstance(row, Ban):
        return row
    created = row.get("created_ms")
    return Ban(
        str(row["kind"]),
        str(row["value"]),
        from_ms(int(created)) if created is not None else datetime.now(UTC),
        row.get("reason"),
    )
