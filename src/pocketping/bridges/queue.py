"""The bridges' hub: what the chat service stores becomes platform jobs in the outbox.

:class:`BridgeHub` is a :class:`~pocketping.chat.ChatListener`: each stored change is written
to the app's :class:`~pocketping.outbox.Outbox` as one job per bridge (each bridge is an outbox
destination), before the caller is answered. The outbox's worker runs them; jobs are idempotent
(``<bridge>:done:<key>``), so a restart never posts a message twice once its success was
recorded, and Discord's message nonces cover the instant between the post and that record.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.routing import Route

from ..chat import ChatListener
from ..errors import StorageCapabilityError
from ..models import Message, Session
from ..outbox import Outbox, now_ms
from ..storage.base import BaseStorage
from .base import Bridge

if TYPE_CHECKING:
    from ..core import PocketPing

log = logging.getLogger("pocketping.bridges")


class BridgeHub(ChatListener):
    """Owns the configured bridges for one :class:`~pocketping.PocketPing`.

    ``lease`` (s): how long a claimed job may run before another worker may take it over;
    ``idle_poll`` (s): how often an idle worker looks for jobs queued by other processes.
    """

    def __init__(self, pp: PocketPing, bridges: list[Bridge], outbox: Outbox | None = None) -> None:
        names = [b.name for b in bridges]
        for b in bridges:
            if not isinstance(b, Bridge):
                raise TypeError(f"bridges must be TelegramBridge, SlackBridge or DiscordBridge, not {b!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"one bridge per platform, got {names}")
        self.pp = pp
        self.bridges = list(bridges)
        self.by_name = {b.name: b for b in bridges}
        #: The outbox the bridges' jobs go through (the app's, shared with webhooks).
        self.outbox = outbox if outbox is not None else Outbox(pp)
        for b in bridges:
            self.outbox.add(b)

    @property
    def store(self) -> BaseStorage:
        """Where jobs and the bridges' keys live (the outbox's store)."""
        return self.outbox.store

    def routes(self) -> list[Route]:
        return [route for b in self.bridges for route in b.routes()]

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        for b in self.bridges:
            await b.start(self)

    async def recover(self, session: Session, messages: list[Message]) -> None:
        """Queue again each recent message that a bridge has not shown yet (the outbox's
        recovery at start). A job still queued may be queued twice; the second finds the
        first's ``done`` key and is skipped, so nothing is posted twice."""
        for message in messages:
            if message.sender == "visitor":
                await self.visitor_message(session, message, missing=True)
            else:
                await self.operator_message(message, missing=True)

    async def stop(self) -> None:
        """Stop the bridges' clients (the outbox's worker stops first)."""
        for b in self.bridges:
            try:
                await b.stop()
            except Exception:
                log.exception("stopping bridge failed", extra={"session_id": None, "bridge": b.name})

    # -- core hooks (never raise) -----------------------------------------------------------

    async def enqueue(self, bridge: str, session_id: str, kind: str, key: str, payload: dict[str, Any]) -> None:
        await self.outbox.enqueue(bridge, session_id, kind, key, payload)

    async def _fan_out(
        self, session_id: str, kind: str, key: str, payload: dict[str, Any], skip: Any = None, *, missing: bool = False
    ) -> None:
        """Queue the job for every bridge but ``skip``; with ``missing``, only for bridges
        where it has not run yet (recovery)."""
        for b in self.bridges:
            if b.name == skip:
                continue
            try:
                if missing and await self.store.bridge_key_get(f"{b.name}:done:{key}") is not None:
                    continue
                await self.enqueue(b.name, session_id, kind, key, payload)
            except (StorageCapabilityError, Exception):
                log.exception(
                    "could not queue %s for the bridge", kind, extra={"session_id": session_id, "bridge": b.name}
                )

    async def session_started(self, session: Session) -> None:
        await self._fan_out(session.id, "open", f"open:{session.id}", {})

    async def visitor_message(
        self, session: Session, message: Message, reopened: bool = False, *, missing: bool = False
    ) -> None:
        payload: dict[str, Any] = {"message_id": message.id}
        if reopened:
            payload["reopened"] = True
        await self._fan_out(session.id, "message", f"msg:{message.id}", payload, missing=missing)

    async def operator_message(self, message: Message, *, missing: bool = False) -> None:
        """Show operator messages sent elsewhere (code, console, another bridge) in each thread."""
        if message.sender == "visitor":
            return
        source = message.metadata.get("bridge")
        payload = {"message_id": message.id}
        await self._fan_out(message.session_id, "operator", f"msg:{message.id}", payload, source, missing=missing)

    async def message_changed(self, message: Message) -> None:
        """Mirror an edit or a delete (from the widget, code or the console) to the threads."""
        kind = "delete" if message.deleted_at is not None else "edit"
        stamp = int(message.cursor.timestamp() * 1000)
        key = f"{kind}:{message.id}:{stamp}"
        await self._fan_out(message.session_id, kind, key, {"message_id": message.id}, message.metadata.get("bridge"))

    async def rating_received(self, session: Session, rating: dict[str, Any]) -> None:
        """Show the visitor's rating in each thread (a session is rated once)."""
        await self._fan_out(session.id, "csat", f"csat:{session.id}", {"rating": rating})

    async def operator_note(self, session_id: str, text: str, key: str) -> None:
        """Show a note for the operators (the AI's handoff reason) in each thread."""
        await self._fan_out(session_id, "note", f"note:{key}", {"text": text})

    async def session_closed(self, session: Session, skip: str | None = None) -> None:
        await self._fan_out(session.id, "close", f"close:{session.id}:{now_ms()}", {}, skip)

    def backoff(self, bridge: Bridge, attempts: int) -> float:
        """The wait before attempt ``attempts + 1`` of a job of ``bridge``."""
        return bridge.retry_delay(attempts) or 0.0

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the outbox has nothing due (tests, scripts). True if it emptied in time."""
        return await self.outbox.drain(timeout)
