"""The parts of the platforms' payloads the bridges read, as pydantic models.

A request that passed its platform's signature check can still carry something we cannot use
(a field of the wrong type, a missing id). It is checked against these models first: what does
not fit is logged and acknowledged (Telegram and Slack would otherwise send it again forever),
never a 500. Fields we do not read are ignored.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("pocketping.bridges")

M = TypeVar("M", bound="Payload")


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- Telegram (Bot API Update) ----------------------------------------------------------------


class TelegramUser(Payload):
    id: int
    is_bot: bool = False
    first_name: str = ""


class TelegramChat(Payload):
    id: int


class TelegramReplied(Payload):
    message_id: int


class TelegramMessage(Payload):
    message_id: int
    chat: TelegramChat
    sender: TelegramUser | None = Field(default=None, alias="from")
    message_thread_id: int | None = None
    is_topic_message: bool = False
    text: str | None = None
    caption: str | None = None
    reply_to_message: TelegramReplied | None = None


class TelegramUpdate(Payload):
    update_id: int
    message: TelegramMessage | None = None
    edited_message: TelegramMessage | None = None


# -- Slack (Events API) -----------------------------------------------------------------------


class SlackMessage(Payload):
    ts: str | None = None
    text: str | None = None
    user: str | None = None
    bot_id: str | None = None


class SlackEvent(Payload):
    type: str | None = None
    channel: str | None = None
    subtype: str | None = None
    message: SlackMessage | None = None
    previous_message: SlackMessage | None = None
    deleted_ts: str | None = None
    thread_ts: str | None = None
    ts: str | None = None
    user: str | None = None
    text: str | None = None
    bot_id: str | None = None


class SlackEnvelope(Payload):
    type: str | None = None
    event_id: str | None = None
    challenge: str | None = None
    event: SlackEvent | None = None


# -- Discord (interactions and Gateway messages) ----------------------------------------------


class DiscordUser(Payload):
    id: str | None = None
    username: str | None = None
    global_name: str | None = None
    bot: bool = False


class DiscordMember(Payload):
    user: DiscordUser | None = None
    nick: str | None = None


class DiscordOption(Payload):
    name: str
    value: Any = None


class DiscordCommand(Payload):
    name: str = ""
    options: list[DiscordOption] = Field(default_factory=list)


class DiscordInteraction(Payload):
    id: str = Field(min_length=1)
    type: int
    channel_id: str | None = None
    data: DiscordCommand | None = None
    member: DiscordMember | None = None
    user: DiscordUser | None = None


class DiscordMessage(Payload):
    id: str = Field(min_length=1)
    channel_id: str | None = None
    content: str | None = None
    author: DiscordUser | None = None
    member: DiscordMember | None = None
    webhook_id: str | None = None


def read(model: type[M], data: Any, *, bridge: str, what: str) -> M | None:
    """``data`` as ``model``, or None (logged, without the payload) when it does not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(
            ".".join(str(p) for p in e["loc"]) or "(body)"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        log.warning("%s ignored: unexpected fields (%s)", what, fields, extra={"session_id": None, "bridge": bridge})
        return None
