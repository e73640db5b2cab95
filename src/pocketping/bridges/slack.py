"""Slack: one thread per session in a channel, over the Web API with httpx.

The session's header is the thread's root message (its ``ts`` is the thread key). Operator
replies arrive through the Events API at ``<mount>/webhooks/slack``, verified with the v0
request signature (HMAC-SHA256 of ``v0:<timestamp>:<raw body>`` with the signing secret) within
a 5-minute replay window; ``url_verification`` is answered.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import BridgeError
from ..models import Session
from ..redaction import protect
from .base import REPLAY_WINDOW, Bridge, TemporaryBridgeError, ThreadGone
from .payloads import SlackEnvelope, SlackEvent, SlackMessage, read

log = logging.getLogger("pocketping.bridges")

_ACCEPTED_SUBTYPES = (None, "file_share", "thread_broadcast")


def slack_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class SlackBridge(Bridge):
    """``SlackBridge(bot_token, channel_id, signing_secret=...)``: ``bot_token`` is the app's
    ``xoxb-…`` token; the bot must be a member of ``channel_id``."""

    name = "slack"
    env_required = ("BOT_TOKEN", "CHANNEL_ID")
    env_optional = {"signing_secret": "SIGNING_SECRET", "api_base": "API_BASE"}  # noqa: RUF012
    header_is_separate = False

    def __init__(
        self,
        bot_token: str,
        channel_id: str,
        *,
        signing_secret: str | None = None,
        api_base: str = "https://slack.com/api",
    ) -> None:
        super().__init__()
        self.need(bot_token, "a bot token (xoxb-…)")
        self.need(channel_id, "a channel id (C…)")
        self.bot_token = bot_token
        self.channel_id = channel_id
        self.signing_secret = signing_secret or None
        protect(bot_token, self.signing_secret)
        self.api_base = api_base.rstrip("/")
        self.bot_user_id: str | None = None
        self.bot_id: str | None = None
        self._names: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"SlackBridge(channel_id={self.channel_id!r})"

    # -- formatting (mrkdwn) ----------------------------------------------------------------

    def escape(self, text: str) -> str:
        # Slack's control characters: &, <, > (this also defuses <!channel>, <@U…>, <url|label>).
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def bold(self, text: str) -> str:
        return f"*{text}*"

    # -- Web API ----------------------------------------------------------------------------

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        r = await self.request(
            "POST",
            f"{self.api_base}/{method}",
            json=params,
            headers={"Authorization": f"Bearer {self.bot_token}", "Content-Type": "application/json; charset=utf-8"},
        )
        try:
            body = r.json()
        except ValueError:
            raise TemporaryBridgeError(f"{method}: HTTP {r.status_code}, not JSON", bridge=self.name) from None
        if body.get("ok"):
            return body  # type: ignore[no-any-return]
        error = str(body.get("error") or f"HTTP {r.status_code}")
        if error in ("ratelimited", "service_unavailable", "internal_error", "fatal_error", "request_timeout"):
            raise TemporaryBridgeError(f"{method}: {error}", bridge=self.name, retry_after=self.retry_after(r))
        if error == "thread_not_found":
            raise ThreadGone(f"{method}: {error}", bridge=self.name)
        raise BridgeError(f"{method}: {error}", bridge=self.name)

    async def _post(self, text: str, thread_ts: str | None) -> str:
        params: dict[str, Any] = {
            "channel": self.channel_id,
            "text": text[:39000],
            "parse": "none",
            "link_names": False,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread_ts is not None:
            params["thread_ts"] = thread_ts
        return str((await self.call("chat.postMessage", **params))["ts"])

    async def create_thread(self, session: Session, header: str, nonce: str) -> str:
        return await self._post(header, None)

    async def post(self, thread: str, text: str, nonce: str) -> str:
        return await self._post(text, thread)

    async def edit(self, thread: str, platform_id: str, text: str) -> None:
        try:
            await self.call("chat.update", channel=self.channel_id, ts=platform_id, text=text[:39000], parse="none")
        except BridgeError as exc:
            if "message_not_found" not in str(exc) or isinstance(exc, TemporaryBridgeError):
                raise

    async def remove(self, thread: str, platform_id: str) -> None:
        try:
            await self.call("chat.delete", channel=self.channel_id, ts=platform_id)
        except BridgeError as exc:
            if "message_not_found" not in str(exc) or isinstance(exc, TemporaryBridgeError):
                raise

    async def start(self, hub: Any) -> None:
        await super().start(hub)
        try:
            me = await self.call("auth.test")
            self.bot_user_id, self.bot_id = me.get("user_id"), me.get("bot_id")
        except BridgeError as exc:
            log.warning("auth.test failed: %s", exc, extra=self._log_extra(None))

    async def operator_name(self, user: str) -> str:
        if user not in self._names:
            try:
                info = (await self.call("users.info", user=user)).get("user") or {}
                self._names[user] = str(info.get("real_name") or info.get("name") or user)
            except BridgeError:
                return user
        return self._names[user]

    # -- inbound (Events API) ---------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        if self.signing_secret is None:
            return False
        timestamp = headers.get("x-slack-request-timestamp", "")
        try:
            if abs(time.time() - int(timestamp)) > REPLAY_WINDOW:
                return False
        except ValueError:
            return False
        expected = slack_signature(self.signing_secret, timestamp, body)
        return hmac.compare_digest(expected.encode(), headers.get("x-slack-signature", "").encode())

    async def webhook(self, request: Request) -> Response:
        if self.signing_secret is None:
            return JSONResponse({"ok": False, "error": "no signing_secret configured"}, status_code=403)
        data = await self.verified_object(
            request, self.verify, JSONResponse({"ok": False, "error": "invalid signature"}, status_code=401)
        )
        if isinstance(data, Response):
            return data
        payload = read(SlackEnvelope, data, bridge=self.name, what="Slack request")
        if payload is None:
            return JSONResponse({"ok": True})  # acknowledged, or Slack would send it again
        if payload.type == "url_verification":
            return JSONResponse({"challenge": payload.challenge})
        event_id = payload.event_id
        if payload.type != "event_callback" or event_id is None or payload.event is None:
            return JSONResponse({"ok": True})
        if not await self.first_time(event_id):
            return JSONResponse({"ok": True})
        try:
            await self.handle_event(payload.event)
        except Exception:
            await self.forget_update(event_id)
            log.exception("event handling failed; Slack will redeliver it", extra=self._log_extra(None))
            return JSONResponse({"ok": False}, status_code=500)
        return JSONResponse({"ok": True})

    def _is_own(self, event: SlackEvent | SlackMessage) -> bool:
        return bool(event.bot_id) or (self.bot_user_id is not None and event.user == self.bot_user_id)

    async def handle_event(self, event: SlackEvent) -> None:
        if event.type != "message" or event.channel != self.channel_id:
            return
        if event.subtype == "message_changed":
            changed = event.message
            if changed is not None and not self._is_own(changed) and changed.ts:
                await self.operator_edit(changed.ts, _unescape(changed.text or ""))
            return
        if event.subtype == "message_deleted":
            previous = event.previous_message
            if event.deleted_ts and (previous is None or not self._is_own(previous)):
                await self.operator_delete(event.deleted_ts)
            return
        if event.subtype not in _ACCEPTED_SUBTYPES or self._is_own(event):
            return
        thread_ts, ts = event.thread_ts, event.ts
        if not thread_ts or not ts or thread_ts == ts:
            return  # a top-level channel message, not a reply in a session's thread
        session_id = await self.session_of(thread_ts)
        if session_id is None:
            return
        author = await self.operator_name(event.user) if event.user else None
        await self.operator_text(session_id, _unescape(event.text or ""), ts, author)
