"""What every chat-app bridge shares: thread bookkeeping, delivery of queued jobs, operator input.

A bridge turns core events (new session, visitor message, close, operator message from elsewhere)
into platform calls, which :mod:`pocketping.bridges.queue` runs from the storage's durable outbox;
and it turns verified platform input (webhooks, long polling, the Discord Gateway) into core calls
(``send_message``, ``edit_message``, ``delete_message``, ``close_session``).

Storage keys used (``<bridge>`` is ``telegram``, ``slack`` or ``discord``)::

    <bridge>:thread:<session id>   -> thread (topic id, thread_ts, thread channel id)
    <bridge>:session:<thread>      -> session id
    <bridge>:done:<job key>        -> platform message id: the job reached the platform
    <bridge>:out:<message id>      -> "<thread> <platform id>" of a message we posted
    <bridge>:in:<platform id>      -> "<session id> <message id>" of an operator reply we stored
    <bridge>:seen:<update id>      -> an inbound update already handled (redeliveries)
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import (
    BridgeError,
    InvalidInput,
    MessageNotFound,
    PocketPingError,
    SessionNotFound,
    TemporaryDeliveryError,
)
from ..models import Message, Session
from ..outbox import Destination
from ..protocol import load_object
from ..web.parsing import BadRequest, bad_request, request_body, require_json

if TYPE_CHECKING:
    from ..core import PocketPing
    from ..storage.base import BaseStorage
    from .queue import BridgeHub

log = logging.getLogger("pocketping.bridges")

#: Seconds a signed request stays valid (Slack, Discord and bridge-server signatures carry a
#: timestamp): an older one is refused, so a captured request cannot be replayed later.
REPLAY_WINDOW = 300

COMMANDS = {
    "close": "end the conversation",
    "info": "who the visitor is",
    "online": "show operators as online in the widget",
    "offline": "show operators as offline",
    "ban": "block this visitor (no more messages or conversations)",
    "rate": "ask the visitor to rate the conversation",
    "ai": "on or off: let the AI responder answer here again, or stop it",
    "unban": "unblock this visitor",
    "help": "this list",
}


class TemporaryBridgeError(BridgeError, TemporaryDeliveryError):
    """A platform call that may work later (network error, 5xx, 429): retried with backoff."""

    def __init__(self, message: str, *, bridge: str, retry_after: float | None = None) -> None:
        super().__init__(message, bridge=bridge, retry_after=retry_after)


class ThreadGone(BridgeError):
    """The session's thread was deleted on the platform: a new one is opened on the next try."""


def identity_note(session: Session) -> str:
    """What an identity's hash proves, for operators: the user id alone (name, e-mail and the
    rest are what the visitor's page sent)."""
    if session.identity_verified:
        return "user id verified by your site; name and e-mail as given by the visitor"
    return "not verified: everything as given by the visitor"


class SessionGone(Exception):
    """The session a delivery is about was erased while it ran: the job stops, keeping nothing."""


class Bridge(Destination):
    """Base class of :class:`TelegramBridge`, :class:`SlackBridge` and :class:`DiscordBridge`,
    and of your own: set :attr:`name`, implement :meth:`escape`, :meth:`bold`,
    :meth:`create_thread`, :meth:`post`, :meth:`edit` and :meth:`remove`, and feed operator
    input to :meth:`operator_text` (from :meth:`webhook`, served at ``/webhooks/<name>``).
    Delivery, retries, thread bookkeeping and commands are done here.

    Tunables (instance attributes): ``timeout`` per platform request (s), ``retry_base`` and
    ``retry_cap`` for the exponential backoff (s): a message reaches the thread at most
    ``retry_cap`` seconds after the platform recovers, or right after a 429's Retry-After.
    """

    name = "bridge"
    command_prefix = "!"
    #: Whether the thread header is a separate post (Slack's header *is* the thread's root).
    header_is_separate = True
    timeout = 10.0
    retry_base = 0.5
    retry_cap = 15.0
    logger = "pocketping.bridges"
    refuser = "the platform"

    def __init__(self) -> None:
        self.hub: BridgeHub | None = None
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def need(self, value: Any, what: str) -> None:
        """A :class:`BridgeError` naming ``what`` when a constructor argument is empty."""
        if not isinstance(value, str | int) or not str(value).strip():
            raise BridgeError(f"{type(self).__name__} needs {what}", bridge=self.name)

    # -- wiring -----------------------------------------------------------------------------

    @property
    def pp(self) -> PocketPing:
        if self.hub is None:
            raise BridgeError(f"{self.name} bridge is not attached to a started PocketPing", bridge=self.name)
        return self.hub.pp

    @property
    def store(self) -> BaseStorage:
        assert self.hub is not None
        return self.hub.store

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers={"User-Agent": "pocketping-python"})
        return self._client

    async def start(self, hub: BridgeHub) -> None:
        self.hub = hub

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def routes(self) -> list[Route]:
        return [Route(f"/webhooks/{self.name}", self.webhook, methods=["POST"])]

    #: ``from_env``: the variables (``POCKETPING_<NAME>_<KEY>``) of the positional arguments,
    #: and of the keyword arguments that are read when set.
    env_required: tuple[str, ...] = ()
    env_optional: Mapping[str, str] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The bridge configured by ``POCKETPING_<NAME>_*`` environment variables (or ``environ``):
        :attr:`env_required` must be set (a :class:`BridgeError` names those that are not),
        :attr:`env_optional` are used when set."""
        env = os.environ if environ is None else environ
        prefix = f"POCKETPING_{cls.name.upper()}_"
        missing = [key for key in cls.env_required if not env.get(prefix + key)]
        if missing:
            raise BridgeError("set " + " and ".join(prefix + key for key in missing), bridge=cls.name)
        options = {arg: env[prefix + key] for arg, key in cls.env_optional.items() if env.get(prefix + key)}
        make: Any = cls
        bridge: Self = make(*(env[prefix + key] for key in cls.env_required), **options)
        return bridge

    async def webhook(self, request: Request) -> Response:
        return Response(status_code=404)

    async def verified_object(
        self,
        request: Request,
        verify: Callable[[Mapping[str, str], bytes], bool],
        refusal: Response,
        *,
        json_only: bool = False,
    ) -> dict[str, Any] | Response:
        """The JSON object a request carries if ``verify(headers, body)`` accepts it; otherwise
        the response to give: ``refusal`` (logged), a 400 for a body that is no JSON object, a
        413 past 1 MiB, a 415 for another content type (with ``json_only``)."""
        try:
            body = await request_body(request)
        except BadRequest as exc:
            return bad_request(exc)
        if not verify(request.headers, body):
            log.warning("%s request rejected: bad key or signature", self.name, extra=self._log_extra(None))
            return refusal
        try:
            if json_only:
                require_json(request)
        except BadRequest as exc:
            return bad_request(exc)
        try:
            return load_object(body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    def _log_extra(self, session_id: str | None) -> dict[str, Any]:
        return {"session_id": session_id, "bridge": self.name}

    # -- platform surface (implemented per platform) ----------------------------------------

    def escape(self, text: str) -> str:
        raise NotImplementedError

    def bold(self, text: str) -> str:
        raise NotImplementedError

    async def create_thread(self, session: Session, header: str, nonce: str) -> str:
        """Open the session's thread; returns its id. Posts ``header`` when
        :attr:`header_is_separate` is false."""
        raise NotImplementedError

    async def post(self, thread: str, text: str, nonce: str) -> str:
        """Post ``text`` (already formatted) in ``thread``; returns the platform message id."""
        raise NotImplementedError

    async def edit(self, thread: str, platform_id: str, text: str) -> None:
        """Replace the text of a message we posted (visitor or console edits)."""
        raise NotImplementedError

    async def remove(self, thread: str, platform_id: str) -> None:
        """Delete a message we posted (visitor or console deletes)."""
        raise NotImplementedError

    async def on_closed(self, thread: str) -> None:
        """Platform-side touch after the close notice (e.g. close the forum topic)."""

    async def on_reopened(self, thread: str) -> None:
        """Undo :meth:`on_closed` before posting in a thread of a reopened session."""

    # -- formatting -------------------------------------------------------------------------

    def visitor_name(self, session: Session) -> str:
        ident = session.identity or {}
        for key in ("name", "email"):
            if isinstance(ident.get(key), str) and ident[key].strip():
                return str(ident[key]).strip()
        return "Visitor"

    def thread_title(self, session: Session) -> str:
        name = self.visitor_name(session)
        return f"💬 {name if name != 'Visitor' else session.id[-8:]}"[:90]

    def header(self, session: Session) -> str:
        meta, ident = session.metadata or {}, session.identity or {}
        rows: list[tuple[str, Any]] = [
            ("Visitor", ident.get("name")),
            ("Email", ident.get("email")),
            ("User id", ident.get("id")),
            ("Identity", identity_note(session) if ident else None),
            ("Page", meta.get("url")),
            ("Title", meta.get("pageTitle")),
            ("Referrer", meta.get("referrer")),
            ("Language", meta.get("language")),
            ("Timezone", meta.get("timezone")),
            ("Browser", meta.get("userAgent")),
            ("Session", session.id),
        ]
        lines = [self.bold("🆕 New conversation")]
        lines += [f"{self.bold(label + ':')} {self.escape(str(value))}" for label, value in rows if value]
        p = self.command_prefix
        lines.append(
            self.escape(f"Reply in this thread to answer. {p}close, {p}info; start with // for a private note.")
        )
        return "\n".join(lines)

    def render(self, kind: str, session: Session, message: Message | None, payload: dict[str, Any]) -> str | None:
        if kind == "message" and message is not None:
            text = self.bold(self.escape(self.visitor_name(session)) + ":") + "\n" + self.escape(message.content)
            for a in message.attachments:
                text += "\n📎 " + self.escape(f"{a.filename} {a.url}".strip())
            return text
        if kind in ("edit", "delete") and message is not None:
            base = self.render("message" if message.sender == "visitor" else "operator", session, message, payload)
            return None if base is None else base + "\n" + self.escape("(edited)")
        if kind == "operator" and message is not None and message.sender in ("ai", "system"):
            label = "🤖 AI assistant:" if message.sender == "ai" else "ℹ️ Sent to the visitor:"
            return self.bold(self.escape(label)) + "\n" + self.escape(message.content)
        if kind == "operator" and message is not None:
            who = message.metadata.get("operatorName") or message.sender
            via = message.metadata.get("bridge") or "PocketPing"
            return self.bold(self.escape(f"🧑‍💼 {who} (via {via}):")) + "\n" + self.escape(message.content)
        if kind == "close":
            return self.bold("🔴 Conversation closed")
        if kind == "csat":
            rating = payload.get("rating") or {}
            text = self.bold(self.escape(f"⭐ Rated {rating.get('score')}/5"))
            if rating.get("comment"):
                text += "\n" + self.escape(str(rating["comment"]))
            return text
        if kind == "notice":
            return str(payload["text"])
        if kind == "note":
            return self.bold(self.escape("🤖 Note (not shown to the visitor):")) + "\n" + self.escape(payload["text"])
        return None

    # -- delivery (called by the outbox worker) --------------------------------------------

    async def thread_of(self, session_id: str) -> str | None:
        return await self.store.bridge_key_get(f"{self.name}:thread:{session_id}")

    async def session_of(self, thread: str) -> str | None:
        return await self.store.bridge_key_get(f"{self.name}:session:{thread}")

    async def _keep(self, key: str, value: str, session_id: str) -> None:
        """Store a key about a session; :class:`SessionGone` when the storage refuses it
        because the session was erased while the platform call ran."""
        stored = await self.store.bridge_key_set(key, value, session_id=session_id)
        if stored is False and not await self.pp.chat.storage.has_session(session_id):
            raise SessionGone(session_id)

    async def _still_there(self, session_id: str) -> None:
        """:class:`SessionGone` when the session was erased (checked before each platform call
        that would show something about it)."""
        if not await self.pp.chat.storage.has_session(session_id):
            raise SessionGone(session_id)

    async def ensure_thread(self, session: Session) -> str:
        thread = await self.thread_of(session.id)
        if thread is None:
            await self._still_there(session.id)
            thread = await self.create_thread(session, self.header(session), _nonce(f"open:{session.id}"))
            await self._keep(f"{self.name}:session:{thread}", session.id, session.id)
            await self._keep(f"{self.name}:thread:{session.id}", thread, session.id)
            await self.store.bridge_key_delete(f"{self.name}:done:header:{session.id}")
            log.info("opened thread %s", thread, extra=self._log_extra(session.id))
        if self.header_is_separate and await self.store.bridge_key_get(f"{self.name}:done:header:{session.id}") is None:
            await self._still_there(session.id)
            pid = await self.post(thread, self.header(session), _nonce(f"header:{thread}"))
            await self._keep(f"{self.name}:done:header:{session.id}", pid, session.id)
        return thread

    async def job_context(self, job: dict[str, Any]) -> tuple[Session, Message | None] | None:
        """The session and message (for jobs about one) a queued job is about; None when the
        job already ran here or what it is about is gone."""
        sid = job["session_id"]
        if await self.store.bridge_key_get(f"{self.name}:done:{job['key']}") is not None:
            return None
        session = await self.pp.chat.find_session(sid)
        if session is None:
            log.warning("session is gone; dropping %s job", job["kind"], extra=self._log_extra(sid))
            return None
        message = None
        if "message_id" in job["payload"]:
            message = await self.pp.chat.get_message(sid, job["payload"]["message_id"])
            if message is None:
                return None
        return session, message

    async def job_done(self, job: dict[str, Any], value: str = "1") -> None:
        """Record that ``job`` reached the platform (``value``: what it became there)."""
        await self._keep(f"{self.name}:done:{job['key']}", value, job["session_id"])

    async def deliver(self, job: dict[str, Any]) -> None:
        """Run one queued job. Idempotent: a job that already ran here is skipped; a job
        whose session is erased while it runs stops, and keeps nothing."""
        try:
            await self._deliver(job)
        except SessionGone:
            log.info("session erased; dropping %s job", job["kind"], extra=self._log_extra(job["session_id"]))

    async def _deliver(self, job: dict[str, Any]) -> None:
        kind, key, sid = job["kind"], job["key"], job["session_id"]
        found = await self.job_context(job)
        if found is None:
            return
        session, message = found
        if message is not None and message.deleted_at is not None and kind != "delete":
            return
        if kind in ("edit", "delete"):
            await self._change(kind, session, message, job)
            return
        try:
            thread = await self.ensure_thread(session)
            if kind == "open":
                return
            text = self.render(kind, session, message, job["payload"])
            if text is None:
                return
            if kind == "message" and job["payload"].get("reopened"):
                await self.on_reopened(thread)
            await self._still_there(sid)
            pid = await self.post(thread, text, _nonce(key))
        except ThreadGone as exc:
            await self._forget_thread(sid)
            raise TemporaryBridgeError(str(exc), bridge=self.name, retry_after=0) from exc
        await self.job_done(job, pid)
        if message is not None:
            await self._keep(f"{self.name}:out:{message.id}", f"{thread} {pid}", message.session_id)
        if kind == "close":
            await self.on_closed(thread)

    async def _change(self, kind: str, session: Session, message: Message | None, job: dict[str, Any]) -> None:
        assert message is not None
        posted = await self.store.bridge_key_get(f"{self.name}:out:{message.id}")
        if posted is None:
            return  # never posted here (e.g. it came from this platform): nothing to mirror
        thread, _, pid = posted.partition(" ")
        if kind == "delete":
            await self.remove(thread, pid)
        else:
            text = self.render(kind, session, message, job["payload"])
            if text is not None:
                await self.edit(thread, pid, text)
        await self.job_done(job, pid)

    async def _forget_thread(self, session_id: str) -> None:
        thread = await self.thread_of(session_id)
        await self.store.bridge_key_delete(f"{self.name}:thread:{session_id}")
        if thread is not None:
            await self.store.bridge_key_delete(f"{self.name}:session:{thread}")
        log.warning("thread %s is gone; a new one will be opened", thread, extra=self._log_extra(session_id))

    # -- operator input (called by the platform's verified inbound paths) -------------------

    async def first_time(self, update_id: str) -> bool:
        """True the first time an inbound update id is seen (redeliveries are skipped)."""
        return await self.store.bridge_key_set(f"{self.name}:seen:{update_id}", "1", only_new=True)

    async def forget_update(self, update_id: str) -> None:
        await self.store.bridge_key_delete(f"{self.name}:seen:{update_id}")

    async def notice(self, session_id: str, text: str) -> None:
        assert self.hub is not None
        await self.hub.enqueue(self.name, session_id, "notice", f"notice:{secrets.token_hex(8)}", {"text": text})

    def parse_command(self, text: str) -> tuple[str, str] | None:
        if not text.startswith(self.command_prefix):
            return None
        word, _, rest = text[len(self.command_prefix) :].partition(" ")
        word = word.split("@", 1)[0].lower()
        return (word, rest.strip()) if word in COMMANDS else None

    async def operator_text(self, session_id: str, text: str, platform_id: str, author: str | None) -> None:
        """An operator wrote ``text`` in the session's thread."""
        extra = self._log_extra(session_id)
        stripped = text.strip()
        if not stripped or stripped.startswith("//"):
            log.debug("internal note kept in the thread", extra=extra)
            return
        command = self.parse_command(stripped)
        if command is not None:
            await self.command(session_id, *command)
            return
        try:
            message = await self.pp.send_message(
                session_id,
                text,
                type="operator",
                metadata={"bridge": self.name, "bridgeMessageId": platform_id, "operatorName": author or "Operator"},
            )
        except InvalidInput as exc:
            await self.notice(session_id, self.escape(f"⚠️ Not sent to the visitor: {exc}"))
            return
        await self.store.bridge_key_set(
            f"{self.name}:in:{platform_id}", f"{session_id} {message.id}", session_id=session_id
        )
        if not self.pp.operator_online:
            await self.pp.set_operator_online(True)
        log.info("operator reply stored", extra=extra)

    async def _stored(self, platform_id: str) -> tuple[str, str] | None:
        value = await self.store.bridge_key_get(f"{self.name}:in:{platform_id}")
        if value is None:
            return None
        sid, _, mid = value.partition(" ")
        return sid, mid

    async def operator_edit(self, platform_id: str, text: str) -> None:
        found = await self._stored(platform_id)
        if found is None or not text.strip() or text.strip().startswith("//"):
            return
        try:
            await self.pp.edit_message(found[0], found[1], text)
        except (MessageNotFound, SessionNotFound, PocketPingError) as exc:
            log.warning("operator edit not applied: %s", exc, extra=self._log_extra(found[0]))

    async def operator_delete(self, platform_id: str) -> None:
        found = await self._stored(platform_id)
        if found is None:
            return
        try:
            await self.pp.delete_message(found[0], found[1])
        except (MessageNotFound, SessionNotFound) as exc:
            log.warning("operator delete not applied: %s", exc, extra=self._log_extra(found[0]))

    async def command(self, session_id: str, name: str, args: str) -> None:
        log.info("operator command %s", name, extra=self._log_extra(session_id))
        if name == "close":
            await self.pp.close_session(session_id)  # the close notice comes back through the queue
        elif name == "info":
            session = await self.pp.get_session(session_id)
            await self.notice(session_id, self.header(session).replace("🆕 New conversation", "ℹ️ Conversation", 1))
        elif name == "rate":
            await self.pp.request_csat(session_id)
            await self.notice(session_id, self.escape("Rating requested: the visitor sees a rating card."))
        elif name == "ai":
            if self.pp.ai is None or args.lower() not in ("on", "off"):
                hint = f"{self.command_prefix}ai on or {self.command_prefix}ai off"
                text = "No AI responder is configured." if self.pp.ai is None else hint
                await self.notice(session_id, self.escape(text))
                return
            await self.pp.set_ai(session_id, args.lower() == "on")
            text = "The AI answers here again." if args.lower() == "on" else "The AI stays quiet here."
            await self.notice(session_id, self.escape(text))
        elif name in ("online", "offline"):
            await self.pp.set_operator_online(name == "online")
            await self.notice(session_id, self.escape(f"Operators are now shown as {name}."))
        elif name in ("ban", "unban"):
            await (self.pp.ban(session_id) if name == "ban" else self.pp.unban(session_id))
            await self.notice(session_id, self.escape(f"Visitor {'blocked' if name == 'ban' else 'unblocked'}."))
        else:
            p = self.command_prefix
            await self.notice(session_id, self.escape("\n".join(f"{p}{c}: {h}" for c, h in COMMANDS.items())))

    # -- HTTP -------------------------------------------------------------------------------

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One platform request; network errors, 5xx and 429 become :class:`TemporaryBridgeError`."""
        try:
            r = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise TemporaryBridgeError(f"{type(exc).__name__}: {exc}", bridge=self.name) from exc
        if r.status_code == 429:
            raise TemporaryBridgeError("rate limited (429)", bridge=self.name, retry_after=self.retry_after(r))
        if r.status_code >= 500:
            raise TemporaryBridgeError(f"HTTP {r.status_code}", bridge=self.name)
        return r

    def retry_after(self, r: httpx.Response) -> float | None:
        try:
            return float(r.headers["retry-after"])
        except (KeyError, ValueError):
            return None


def _nonce(key: str) -> str:
    """A short stable id for a job (Discord dedupes messages by nonce)."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:25]
