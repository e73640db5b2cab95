"""``AIResponder``: answers visitors first, from the site's own documents, and hands over to a
person.

Each visitor message queues an ``ai`` job in the outbox, due ``delay`` seconds later (at once
outside the opening hours with nobody online). Jobs of a conversation run one at a time in
order, on whichever process claims them, so at most one model call runs per conversation and a
restart neither loses nor repeats an answer. A job answers only if its message is still the
visitor's last when it comes due (so a burst is answered once, after the delay counted from
its last message), no person has replied, and the AI is on in that conversation; an answer
written while a newer visitor message arrived is dropped, and the newer job answers the burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import InvalidInput, SessionNotFound, TemporaryDeliveryError
from ..models import Message, Session, to_ms
from ..outbox import AppDestination
from ..redaction import protect
from .knowledge import Knowledge, Passage
from .model import ChatModel, Completion, ModelError

if TYPE_CHECKING:
    pass

log = logging.getLogger("pocketping.ai")

#: What the model is told first, before the site's own ``system_prompt``.
BUILT_IN_INSTRUCTIONS = """\
You are the first responder in the live chat of a website, answering visitors before a person \
on the team can.
- Answer only from the passages below and the conversation. Do not invent facts, prices, \
dates, links or policies.
- When the passages do not hold the answer, say so plainly and offer to bring in a person: \
call the handoff tool with the reason.
- When the visitor asks for a person, or is upset, call the handoff tool.
- Never promise actions later (no "I will e-mail you", "I will check"): you can only answer here.
- Answer in the visitor's language, in short plain text: no Markdown, no HTML. You may give a \
passage's URL when it helps."""

#: A visitor asking for a person in plain words (hands over without a model call, so models
#: without function calling hand over too). English, French, German and Spanish.
ASKS_FOR_PERSON = re.compile(
    r"\b(?:"
    r"(?:talk|speak|chat|connect me|put me through)\s+(?:to|with)\s+(?:a\s+|an\s+|the\s+|some\s*)?"
    r"(?:human|person|agent|operator|representative|somebody|someone|one|real person|support)"
    r"|(?:real|actual|live)\s+(?:person|human|agent)|human\s+(?:please|agent|being)|a\s+human\b"
    r"|(?:parler|discuter)\s+(?:à|a|avec)\s+(?:un|une|quelqu)|(?:un|une)\s+(?:humain|vraie personne|conseill\w+)"
    r"|(?:mit\s+)?(?:einem|einer)\s+(?:menschen|mitarbeiter\w*|person)\s+(?:sprechen|reden)|echten\s+menschen"
    r"|(?:hablar|chatear)\s+con\s+(?:un|una|alguien)|(?:un|una)\s+(?:humano|persona real|agente)"
    r")",
    re.IGNORECASE,
)

#: Waits before each retry of a failed model call; after the last the conversation is
#: handed over silently.
RETRY_SCHEDULE: tuple[float, ...] = (2.0, 8.0)
#: Earlier messages sent with each turn.
HISTORY = 20
#: Seconds between typing notices while the model writes (the widget clears them after 5 s).
TYPING_REFRESH = 4.0


@dataclass
class AIState:
    """The AI in one conversation: on (since ``since``, ms; operator replies before it do not
    count) or off (handed over, with ``reason``)."""

    active: bool = True
    since: int = 0
    reason: str | None = None


class AIResponder(AppDestination):
    """The first responder. ``base_url``: an OpenAI-compatible API (``/chat/completions``
    under it); ``api_key=None`` sends no Authorization header; ``delay``: seconds without an
    operator reply before it answers; ``knowledge``: Markdown or text files (paths or globs) it
    answers from; ``handoff_message``: what the visitor reads when it hands over;
    ``max_replies``: its answers per conversation before it hands over; ``timeout``: seconds
    per model call; ``passages``: how many passages go with each turn.
    """

    name = "ai"
    setting = "ai"
    logger = "pocketping.ai"
    refuser = "the model server"

    def __init__(
        self,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        model: str,
        system_prompt: str | None = None,
        delay: float = 30,
        knowledge: Sequence[str] | None = None,
        handoff_message: str = "I've asked a teammate to join; they'll reply here.",
        max_replies: int = 20,
        timeout: float = 30,
        passages: int = 4,
        retry_schedule: Sequence[float] = RETRY_SCHEDULE,
    ) -> None:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(
                f"AIResponder base_url must be an http(s) URL such as http://localhost:11434/v1, not {base_url!r}"
            )
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput("AIResponder model must be the model's name, such as gpt-4o-mini or llama3.1")
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise InvalidInput("AIResponder api_key must be a string, or None to send no Authorization header")
        for what, value, low in (("delay", delay, 0), ("timeout", timeout, 0.001)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
                raise InvalidInput(f"AIResponder {what} must be a number of seconds (at least {low:g}), not {value!r}")
        if not isinstance(max_replies, int) or isinstance(max_replies, bool) or max_replies < 1:
            raise InvalidInput(f"AIResponder max_replies must be a whole number, at least 1, not {max_replies!r}")
        if not isinstance(handoff_message, str) or not handoff_message.strip():
            raise InvalidInput("AIResponder handoff_message must be a non-empty string")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidInput("AIResponder system_prompt must be a string or None")
        protect(api_key)
        self.model = ChatModel(base_url, api_key, model.strip(), float(timeout))
        self.system_prompt = system_prompt.strip() if system_prompt and system_prompt.strip() else None
        self.delay = float(delay)
        self.handoff_message = handoff_message.strip()
        self.max_replies = max_replies
        self.passages = passages
        self.retry_schedule: tuple[float, ...] = tuple(float(s) for s in retry_schedule)
        self.knowledge = Knowledge(knowledge) if knowledge is not None else None
        if self.knowledge is not None:
            self.knowledge.load()

    def __repr__(self) -> str:  # the key stays out of logs
        return f"AIResponder(base_url={self.model.url.rsplit('/chat/completions', 1)[0]!r}, model={self.model.model!r})"

    async def stopped(self) -> None:
        await self.model.close()

    async def reload(self) -> int:
        """Re-read the knowledge files; returns the number of passages (0 without ``knowledge``)."""
        if self.knowledge is None:
            return 0
        count = await asyncio.to_thread(self.knowledge.load)
        log.info("knowledge reloaded: %d passages", count, extra={"session_id": None})
        return count

    # -- state ------------------------------------------------------------------------------

    async def state(self, session_id: str) -> AIState:
        raw = await self.pp.outbox.store.bridge_key_get(f"ai:state:{session_id}")
        return AIState(**json.loads(raw)) if raw else AIState()

    async def _save(self, session_id: str, state: AIState) -> None:
        value = json.dumps({"active": state.active, "since": state.since, "reason": state.reason})
        await self.pp.outbox.store.bridge_key_set(f"ai:state:{session_id}", value, session_id=session_id)

    async def set_active(self, session_id: str, active: bool, reason: str | None = None) -> None:
        """Turn the AI on (handing back: operator replies so far no longer keep it quiet) or off."""
        await self.pp.chat.require_session(session_id)
        state = AIState(active=True, since=int(time.time() * 1000)) if active else AIState(False, 0, reason)
        await self._save(session_id, state)
        log.info("AI turned %s", "on" if active else "off", extra={"session_id": session_id})

    # -- listening --------------------------------------------------------------------------

    async def visitor_message(self, session: Session, message: Message, reopened: bool = False) -> None:
        if not (await self.state(session.id)).active:
            return  # handed over: nothing to queue
        chat = self.pp.chat
        at_once = chat.business_hours is not None and not chat.operator_reachable()
        payload = {"messageId": message.id}
        delay = 0 if at_once else self.delay
        await self.pp.outbox.enqueue(self.name, session.id, "answer", f"ai:{message.id}", payload, delay=delay)

    async def recover(self, session: Session, messages: list[Message]) -> None:
        """Queue again the answer to the visitor's newest message unless it was answered (a
        job queued twice finds the answer given and does nothing)."""
        last = next((m for m in reversed(messages) if m.sender == "visitor"), None)
        if last is None or any(m.metadata.get("aiFor") == last.id for m in messages):
            return
        await self.visitor_message(session, last)

    # -- answering --------------------------------------------------------------------------

    def _quiet(self, messages: list[Message], state: AIState) -> bool:
        """Whether a person has replied since the AI was (handed back) on."""
        return not state.active or any(m.sender == "operator" and to_ms(m.created_at) > state.since for m in messages)

    async def deliver(self, job: dict[str, Any]) -> None:
        sid, mine = job["session_id"], job["payload"]["messageId"]
        extra = {"session_id": sid, "bridge": self.name}
        state = await self.state(sid)
        messages = await self.pp.storage.get_messages(sid)
        if not self._due(messages, mine, state):
            return
        if sum(1 for m in messages if m.sender == "ai" and to_ms(m.created_at) > state.since) >= self.max_replies:
            await self.hand_over(sid, f"the AI has answered {self.max_replies} times (max_replies)")
            return
        burst = _burst(messages)
        if ASKS_FOR_PERSON.search(" ".join(m.content for m in burst)):
            await self.hand_over(sid, "the visitor asked for a person")
            return
        found = self.knowledge.search(" ".join(m.content for m in burst), self.passages) if self.knowledge else []
        try:
            await self.pp.chat.operator_typing(sid, True, sender="ai")
        except SessionNotFound:
            return
        try:
            answer = await self._complete_showing_typing(sid, self._prompt(messages, found))
        except ModelError as exc:
            await self._typing_off(sid)
            if job["attempts"] < len(self.retry_schedule or ()):
                log.warning("model call failed (%s); retrying", exc, extra=extra)
                raise TemporaryDeliveryError(str(exc), retry_after=exc.retry_after) from None
            log.error("model call failed (%s); handing over", exc, extra=extra)
            await self.hand_over(sid, f"the AI could not answer ({exc})", tell_visitor=False)
            return
        # What happened while the model wrote: a newer message, a person's reply, a hand-over.
        state = await self.state(sid)
        messages = await self.pp.storage.get_messages(sid)
        if not self._due(messages, mine, state):
            await self._typing_off(sid)
            log.info("dropped an answer written while the conversation moved on", extra=extra)
            return
        await self._answer(sid, mine, answer)

    async def _complete_showing_typing(self, sid: str, prompt: list[dict[str, Any]]) -> Completion:
        """The model's answer; the typing dots (which clear by themselves after a few seconds)
        are shown again every few seconds while it writes."""
        call = asyncio.ensure_future(self.model.complete(prompt))
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=TYPING_REFRESH)
                if done:
                    return call.result()
                with contextlib.suppress(SessionNotFound):
                    await self.pp.chat.operator_typing(sid, True, sender="ai")
        finally:
            if not call.done():
                call.cancel()

    def _due(self, messages: list[Message], mine: str, state: AIState) -> bool:
        if any(m.metadata.get("aiFor") == mine for m in messages):
            return False  # answered already (a restart between the answer and its done mark)
        last = next((m for m in reversed(messages) if m.sender == "visitor" and m.deleted_at is None), None)
        return last is not None and last.id == mine and not self._quiet(messages, state)

    async def _answer(self, sid: str, mine: str, answer: Completion) -> None:
        if answer.handoff is not None:
            await self.hand_over(sid, answer.handoff, answer_to=mine)
            return
        text = answer.content[: self.pp.chat.max_message_length]
        await self.pp.send_message(sid, content=text, type="ai", metadata={"aiFor": mine})

    async def _typing_off(self, sid: str) -> None:
        with contextlib.suppress(SessionNotFound):
            await self.pp.chat.operator_typing(sid, False, sender="ai")

    async def hand_over(
        self, session_id: str, reason: str, *, tell_visitor: bool = True, answer_to: str | None = None
    ) -> None:
        """Turn the AI off here, tell the visitor (unless ``tell_visitor`` is False) and the
        operators (with ``reason``, never shown to the visitor)."""
        reason = " ".join(reason.split())[:300] or "no reason given"
        await self._save(session_id, AIState(active=False, reason=reason))
        if tell_visitor:
            metadata: dict[str, Any] = {"ai": True, "handoff": True}
            if answer_to:
                metadata["aiFor"] = answer_to
            await self.pp.send_message(session_id, content=self.handoff_message, type="system", metadata=metadata)
        await self.pp.chat.note_for_operators(session_id, f"AI handed over: {reason}", key=f"handoff:{time.time_ns()}")
        log.info("AI handed the conversation over", extra={"session_id": session_id, "bridge": self.name})

    def _prompt(self, messages: list[Message], passages: list[Passage]) -> list[dict[str, Any]]:
        parts = [BUILT_IN_INSTRUCTIONS]
        if self.system_prompt:
            parts.append(self.system_prompt)
        chat = self.pp.chat
        if chat.business_hours is not None and not chat.operator_reachable():
            parts.append("The team is outside its opening hours now: a person will reply when they are back.")
        if passages:
            blocks = []
            for i, p in enumerate(passages, 1):
                head = f"[{i}] {p.title}" + (f"\nURL: {p.url}" if p.url else "")
                blocks.append(f"{head}\n{p.text}")
            parts.append("Passages:\n\n" + "\n\n".join(blocks))
        elif self.knowledge is not None:
            parts.append("Passages: none of the site's documents match this question.")
        out: list[dict[str, Any]] = [{"role": "system", "content": "\n\n".join(parts)}]
        for m in messages[-HISTORY:]:
            if m.deleted_at is not None or not m.content or m.sender == "system":
                continue
            if m.sender == "visitor":
                out.append({"role": "user", "content": m.content})
            else:
                text = m.content if m.sender == "ai" else f"(a person on the team) {m.content}"
                out.append({"role": "assistant", "content": text})
        return out


def _burst(messages: list[Message]) -> list[Message]:
    """The visitor's messages since the last reply (one turn)."""
    out: list[Message] = []
    for m in reversed(messages):
        if m.sender in ("operator", "ai"):
            break
        if m.sender == "visitor" and m.deleted_at is None:
            out.append(m)
    return list(reversed(out))
