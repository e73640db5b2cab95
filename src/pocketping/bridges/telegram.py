"""Telegram: one forum topic per session in a forum supergroup, over the Bot API with httpx.

Operator input arrives through the webhook at ``<mount>/webhooks/telegram`` (verified with the
``X-Telegram-Bot-Api-Secret-Token`` header) when ``webhook_secret`` is set, otherwise by long
polling (``getUpdates``), which needs no public URL: handy for local development.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import BridgeError
from ..models import Session
from ..outbox import cancel
from ..redaction import protect
from .base import Bridge, TemporaryBridgeError, ThreadGone
from .payloads import TelegramMessage, TelegramUpdate, read

log = logging.getLogger("pocketping.bridges")

_GONE = ("thread not found", "topic_deleted", "topic_id_invalid")


class TelegramBridge(Bridge):
    """``TelegramBridge(bot_token, chat_id, webhook_secret=...)``.

    ``chat_id`` is the forum supergroup (``-100…``); the bot must be an admin allowed to manage
    topics. ``poll_timeout`` (s) is the long-polling wait when no ``webhook_secret`` is given.
    """

    name = "telegram"
    env_required = ("BOT_TOKEN", "CHAT_ID")
    env_optional = {"webhook_secret": "WEBHOOK_SECRET", "api_base": "API_BASE"}  # noqa: RUF012
    command_prefix = "/"
    poll_timeout = 25.0

    def __init__(
        self,
        bot_token: str,
        chat_id: int | str,
        *,
        webhook_secret: str | None = None,
        api_base: str = "https://api.telegram.org",
    ) -> None:
        super().__init__()
        self.need(bot_token, "a bot token (from @BotFather)")
        self.need(chat_id, "the forum supergroup's chat id")
        self.bot_token = bot_token
        self.chat_id = chat_id
        self.webhook_secret = webhook_secret or None
        #: The bot's @username (lower case), learnt from getMe when a command names a bot.
        self.bot_username: str | None = None
        protect(bot_token, self.webhook_secret)
        self.api_base = api_base.rstrip("/")
        self._poller: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        mode = "webhook" if self.webhook_secret else "polling"
        return f"TelegramBridge(chat_id={self.chat_id!r}, {mode})"

    # -- formatting (parse_mode HTML) -------------------------------------------------------

    def escape(self, text: str) -> str:
        return html.escape(text, quote=False)

    def bold(self, text: str) -> str:
        return f"<b>{text}</b>"

    # -- Bot API ----------------------------------------------------------------------------

    def retry_after(self, r: httpx.Response) -> float | None:
        try:
            return float(r.json()["parameters"]["retry_after"])
        except (ValueError, KeyError, TypeError):
            return super().retry_after(r)

    async def call(self, method: str, http_timeout: float | None = None, **params: Any) -> Any:
        url = f"{self.api_base}/bot{self.bot_token}/{method}"
        kwargs: dict[str, Any] = {"json": params}
        if http_timeout is not None:
            kwargs["timeout"] = http_timeout
        r = await self.request("POST", url, **kwargs)
        try:
            body = r.json()
        except ValueError:
            raise TemporaryBridgeError(f"{method}: HTTP {r.status_code}, not JSON", bridge=self.name) from None
        if body.get("ok"):
            return body.get("result")
        description = str(body.get("description") or f"HTTP {r.status_code}")
        if any(g in description.lower() for g in _GONE):
            raise ThreadGone(f"{method}: {description}", bridge=self.name)
        raise BridgeError(f"{method}: {body.get('error_code', r.status_code)} {description}", bridge=self.name)

    async def create_thread(self, session: Session, header: str, nonce: str) -> str:
        topic = await self.call("createForumTopic", chat_id=self.chat_id, name=self.thread_title(session)[:128])
        return str(topic["message_thread_id"])

    async def post(self, thread: str, text: str, nonce: str) -> str:
        sent = await self.call(
            "sendMessage",
            chat_id=self.chat_id,
            message_thread_id=int(thread),
            text=text[:4096],
            parse_mode="HTML",
            link_preview_options={"is_disabled": True},
        )
        return str(sent["message_id"])

    async def edit(self, thread: str, platform_id: str, text: str) -> None:
        try:
            await self.call(
                "editMessageText",
                chat_id=self.chat_id,
                message_id=int(platform_id),
                text=text[:4096],
                parse_mode="HTML",
            )
        except BridgeError as exc:
            if "not modified" not in str(exc) and "not found" not in str(exc) or isinstance(exc, TemporaryBridgeError):
                raise

    async def remove(self, thread: str, platform_id: str) -> None:
        try:
            await self.call("deleteMessage", chat_id=self.chat_id, message_id=int(platform_id))
        except BridgeError as exc:
            if "not found" not in str(exc) or isinstance(exc, TemporaryBridgeError):
                raise

    async def _topic(self, method: str, thread: str) -> None:
        try:
            await self.call(method, chat_id=self.chat_id, message_thread_id=int(thread))
        except BridgeError as exc:  # e.g. TOPIC_NOT_MODIFIED: already in that state
            log.debug("%s: %s", method, exc, extra=self._log_extra(None))

    async def on_closed(self, thread: str) -> None:
        await self._topic("closeForumTopic", thread)

    async def on_reopened(self, thread: str) -> None:
        await self._topic("reopenForumTopic", thread)

    # -- inbound ----------------------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        if self.webhook_secret is None:
            return JSONResponse({"ok": False, "error": "webhook not enabled (no webhook_secret)"}, status_code=403)
        secret = self.webhook_secret
        update = await self.verified_object(
            request,
            lambda headers, _body: hmac.compare_digest(
                headers.get("x-telegram-bot-api-secret-token", "").encode(), secret.encode()
            ),
            JSONResponse({"ok": False}, status_code=401),
        )
        if isinstance(update, Response):
            return update
        try:
            await self.handle_update(update)
        except Exception:
            log.exception("update handling failed; Telegram will redeliver it", extra=self._log_extra(None))
            return JSONResponse({"ok": False}, status_code=500)
        return JSONResponse({"ok": True})

    async def handle_update(self, data: Any) -> None:
        update = read(TelegramUpdate, data, bridge=self.name, what="Telegram update")
        if update is None:
            return
        uid = str(update.update_id)
        if not await self.first_time(uid):
            return
        try:
            if update.message is not None:
                await self._on_message(update.message, edited=False)
            elif update.edited_message is not None:
                await self._on_message(update.edited_message, edited=True)
        except Exception:
            await self.forget_update(uid)
            raise

    async def _on_message(self, msg: TelegramMessage, *, edited: bool) -> None:
        if str(msg.chat.id) != str(self.chat_id) or (msg.sender is not None and msg.sender.is_bot):
            return  # another chat, or a bot (our own posts never come back, other bots' do)
        thread = msg.message_thread_id
        if not msg.is_topic_message or thread is None:
            return
        session_id = await self.session_of(str(thread))
        if session_id is None:
            return
        text = msg.text if msg.text is not None else msg.caption
        if text is None:
            return  # service message (topic created, pinned, …) or media without caption
        if not await self._addressed_to_us(text):
            return  # a command for another bot in the group (/close@otherbot)
        pid = str(msg.message_id)
        if edited:
            await self.operator_edit(pid, text)
            return
        if text.split("@", 1)[0].strip().lower() == "/delete":
            target = msg.reply_to_message.message_id if msg.reply_to_message is not None else None
            if target is not None and target != thread:
                await self.operator_delete(str(target))
            return
        await self.operator_text(session_id, text, pid, msg.sender.first_name if msg.sender else None)

    async def _addressed_to_us(self, text: str) -> bool:
        """False for a command naming another bot (``/close@otherbot``)."""
        word = text.strip().split(None, 1)[0] if text.strip() else ""
        if not word.startswith("/") or "@" not in word:
            return True
        target = word.split("@", 1)[1].lower()
        if self.bot_username is None:
            try:
                me = await self.call("getMe")
                self.bot_username = str(me.get("username") or "").lower() or None
            except BridgeError as exc:
                log.warning("getMe failed (%s): commands naming a bot are ignored", exc, extra=self._log_extra(None))
                return False
        return target == self.bot_username

    # -- long polling -----------------------------------------------------------------------

    async def start(self, hub: Any) -> None:
        await super().start(hub)
        if self.webhook_secret is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="pocketping-telegram-poll")

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        await cancel(poller)
        await super().stop()

    async def _poll(self) -> None:
        extra = self._log_extra(None)
        offset: int | None = None
        delay = 0.0
        try:
            await self.call("deleteWebhook")
        except BridgeError as exc:
            log.warning("deleteWebhook failed: %s", exc, extra=extra)
        while True:
            if delay:
                await asyncio.sleep(delay)
            try:
                params: dict[str, Any] = {
                    "timeout": int(self.poll_timeout),
                    "allowed_updates": ["message", "edited_message"],
                }
                if offset is not None:
                    params["offset"] = offset
                updates = await self.call("getUpdates", http_timeout=self.poll_timeout + 10, **params)
                delay = 0.0
            except Exception as exc:
                retry = getattr(exc, "retry_after", None)
                delay = retry if retry is not None else min(15.0, max(0.5, delay * 2))
                log.warning("getUpdates failed: %s; again in %.1f s", exc, delay, extra=extra)
                continue
            for update in updates or []:
                if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                    offset = max(offset or 0, update["update_id"] + 1)
                try:
                    await self.handle_update(update)
                except Exception:
                    log.exception("update handling failed", extra=extra)
