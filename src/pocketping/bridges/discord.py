"""Discord: one public thread per session in a text channel, over the REST API with httpx.

Operator messages typed in a thread arrive over the Gateway (:mod:`.gateway`); slash commands
(``/reply``, ``/close``, ``/info``) arrive as interactions at ``<mount>/webhooks/discord``,
verified with the application's Ed25519 public key (``X-Signature-Ed25519`` over
``X-Signature-Timestamp`` + raw body). Every post sets ``allowed_mentions: {"parse": []}`` and a
``nonce`` with ``enforce_nonce`` so a retried post is not duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import BridgeError
from ..models import Session
from ..outbox import cancel
from ..redaction import protect
from .base import COMMANDS, REPLAY_WINDOW, Bridge, TemporaryBridgeError, ThreadGone
from .gateway import GatewayClient
from .payloads import DiscordCommand, DiscordInteraction, DiscordMessage, DiscordUser, read

log = logging.getLogger("pocketping.bridges")

_MARKDOWN = re.compile(r"([\\*_~`|>\[\]<#])")
_MASS = re.compile(r"@(everyone|here)", re.IGNORECASE)


class DiscordBridge(Bridge):
    """``DiscordBridge(bot_token, channel_id, public_key=...)``: the bot needs View Channel, Send
    Messages, Create Public Threads, Send Messages in Threads and Manage Threads in
    ``channel_id``, and the MESSAGE_CONTENT intent."""

    name = "discord"
    env_required = ("BOT_TOKEN", "CHANNEL_ID")
    env_optional = {"public_key": "PUBLIC_KEY", "api_base": "API_BASE", "gateway_url": "GATEWAY_URL"}  # noqa: RUF012

    def __init__(
        self,
        bot_token: str,
        channel_id: str,
        *,
        public_key: str | None = None,
        api_base: str = "https://discord.com/api/v10",
        gateway_url: str | None = None,
    ) -> None:
        super().__init__()
        self.need(bot_token, "a bot token")
        self.need(channel_id, "a channel id")
        self.bot_token = bot_token
        protect(bot_token)
        self.channel_id = str(channel_id)
        self.public_key = public_key or None
        self.api_base = api_base.rstrip("/")
        self.gateway_url = gateway_url
        self.gateway = GatewayClient(bot_token, self._gateway_url, self.on_dispatch)
        self._gateway_task: asyncio.Task[None] | None = None
        self._verify_key: Any = None
        if self.public_key is not None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            try:
                self._verify_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))
            except ValueError as exc:
                raise BridgeError(f"public_key must be the app's hex Ed25519 key: {exc}", bridge=self.name) from None

    def __repr__(self) -> str:
        return f"DiscordBridge(channel_id={self.channel_id!r})"

    # -- formatting (Discord markdown) ------------------------------------------------------

    def escape(self, text: str) -> str:
        text = _MARKDOWN.sub(r"\\\1", text)  # markdown, masked links [x](url), <@id> mentions, headings
        return _MASS.sub("@\u200b\\1", text)  # @everyone / @here, even if allowed_mentions were ignored

    def bold(self, text: str) -> str:
        return f"**{text}**"

    # -- REST -------------------------------------------------------------------------------

    def retry_after(self, r: httpx.Response) -> float | None:
        try:
            return float(r.json()["retry_after"])
        except (ValueError, KeyError, TypeError):
            return super().retry_after(r)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bot {self.bot_token}", "User-Agent": "DiscordBot (https://pocketping.io, 0.1)"}
        r = await self.request(method, f"{self.api_base}{path}", json=body, headers=headers)
        if r.status_code == 204:
            return None
        try:
            data = r.json()
        except ValueError:
            raise TemporaryBridgeError(f"{method} {path}: HTTP {r.status_code}, not JSON", bridge=self.name) from None
        if r.status_code < 300:
            return data
        code = data.get("code") if isinstance(data, dict) else None
        if code == 10003:
            raise ThreadGone(f"{method} {path}: unknown channel", bridge=self.name)
        raise BridgeError(f"{method} {path}: HTTP {r.status_code} {data}", bridge=self.name)

    async def create_thread(self, session: Session, header: str, nonce: str) -> str:
        thread = await self.call(
            "POST",
            f"/channels/{self.channel_id}/threads",
            {"name": self.thread_title(session)[:100], "type": 11, "auto_archive_duration": 10080},
        )
        return str(thread["id"])

    async def post(self, thread: str, text: str, nonce: str) -> str:
        body = {"content": text[:2000], "allowed_mentions": {"parse": []}, "nonce": nonce, "enforce_nonce": True}
        return str((await self.call("POST", f"/channels/{thread}/messages", body))["id"])

    async def edit(self, thread: str, platform_id: str, text: str) -> None:
        body = {"content": text[:2000], "allowed_mentions": {"parse": []}}
        try:
            await self.call("PATCH", f"/channels/{thread}/messages/{platform_id}", body)
        except BridgeError as exc:
            if "10008" not in str(exc) or isinstance(exc, TemporaryBridgeError):
                raise

    async def remove(self, thread: str, platform_id: str) -> None:
        try:
            await self.call("DELETE", f"/channels/{thread}/messages/{platform_id}")
        except BridgeError as exc:
            if "10008" not in str(exc) or isinstance(exc, TemporaryBridgeError):
                raise

    async def on_closed(self, thread: str) -> None:
        try:
            await self.call("PATCH", f"/channels/{thread}", {"archived": True})
        except BridgeError as exc:
            log.debug("archiving thread failed: %s", exc, extra=self._log_extra(None))

    # -- Gateway ----------------------------------------------------------------------------

    async def _gateway_url(self) -> str:
        if self.gateway_url:
            return self.gateway_url
        return str((await self.call("GET", "/gateway/bot"))["url"])

    async def start(self, hub: Any) -> None:
        await super().start(hub)
        self._gateway_task = asyncio.get_running_loop().create_task(self.gateway.run(), name="pocketping-discord-gw")

    async def stop(self) -> None:
        task, self._gateway_task = self._gateway_task, None
        await cancel(task)
        await super().stop()

    def _is_own(self, author: DiscordUser | None) -> bool:
        if author is None:
            return False
        return author.bot or (self.gateway.user_id is not None and author.id == self.gateway.user_id)

    async def on_dispatch(self, kind: str, d: dict[str, Any]) -> None:
        if kind not in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"):
            return
        message = read(DiscordMessage, d, bridge=self.name, what=f"Gateway {kind}")
        if message is None:
            return
        if kind == "MESSAGE_DELETE":
            await self.operator_delete(message.id)
            return
        if self._is_own(message.author) or message.webhook_id:
            return
        if kind == "MESSAGE_UPDATE":
            if message.content is not None:
                await self.operator_edit(message.id, message.content)
            return
        session_id = await self.session_of(str(message.channel_id))
        if session_id is None or message.content is None:
            return
        if not await self.first_time(f"msg:{message.id}"):
            return  # replayed after a resume
        author = message.author or DiscordUser()
        name = (message.member.nick if message.member else None) or author.global_name or author.username
        try:
            await self.operator_text(session_id, message.content, message.id, name)
        except Exception:
            await self.forget_update(f"msg:{message.id}")
            raise

    # -- interactions (slash commands) ------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        """The Ed25519 signature of timestamp + body, and a timestamp at most 5 minutes old
        (a captured interaction cannot be replayed later)."""
        from cryptography.exceptions import InvalidSignature

        if self._verify_key is None:
            return False
        timestamp = headers.get("x-signature-timestamp", "")
        try:
            if abs(time.time() - int(timestamp)) > REPLAY_WINDOW:
                return False
            signature = bytes.fromhex(headers.get("x-signature-ed25519", ""))
            self._verify_key.verify(signature, timestamp.encode() + body)
        except (ValueError, InvalidSignature):
            return False
        return True

    async def webhook(self, request: Request) -> Response:
        if self._verify_key is None:
            return JSONResponse({"error": "no public_key configured"}, status_code=403)
        data = await self.verified_object(
            request, self.verify, JSONResponse({"error": "invalid request signature"}, status_code=401)
        )
        if isinstance(data, Response):
            return data
        interaction = read(DiscordInteraction, data, bridge=self.name, what="Discord interaction")
        if interaction is None:
            return _ephemeral("This request could not be read.")
        if interaction.type == 1:
            return JSONResponse({"type": 1})
        if interaction.type != 2 or interaction.data is None:
            return _ephemeral("Not supported.")
        return _ephemeral(await self._slash(interaction, interaction.data))

    async def _slash(self, interaction: DiscordInteraction, data: DiscordCommand) -> str:
        options = {o.name: o.value for o in data.options}
        session_id = await self.session_of(str(interaction.channel_id))
        if session_id is None:
            return "Use this command inside a PocketPing conversation thread."
        text = str(options.get("message") or "").strip()
        if data.name == "reply" and not text:
            return "⚠️ Nothing sent: /reply needs a message."
        if data.name != "reply" and data.name not in COMMANDS:
            return f"Unknown command {data.name!r}."
        iid = interaction.id
        if not await self.first_time(f"interaction:{iid}"):
            return "Already done."
        user = (interaction.member.user if interaction.member else None) or interaction.user or DiscordUser()
        try:
            if data.name == "reply":
                await self.operator_text(session_id, text, f"i{iid}", user.username)
                return "✅ Message sent to the visitor."
            await self.command(session_id, data.name, str(options.get("args") or ""))
            return "✅ Done."
        except Exception:
            await self.forget_update(f"interaction:{iid}")
            raise


def _ephemeral(text: str) -> JSONResponse:
    return JSONResponse({"type": 4, "data": {"content": text, "flags": 64, "allowed_mentions": {"parse": []}}})
