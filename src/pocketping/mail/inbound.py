"""Replies by e-mail: the raw message a mail server relays (``message/rfc822``), reduced to
the conversation it answers and the new text in it.

The conversation is found by the token in the recipient (``reply+<token>@<reply_domain>``),
else by the token in ``In-Reply-To`` / ``References`` (our Message-IDs carry it). The text is
the ``text/plain`` part, or the HTML part turned into text (never kept as HTML); the quoted
history and the signature are cut with mail-parser-reply.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from html.parser import HTMLParser

from ..errors import InvalidInput

#: Largest relayed message taken (attachments included).
MAX_INBOUND = 10 * 1024 * 1024
TOKEN = re.compile(r"^[0-9a-f]{32}$")
_RECIPIENT_TOKEN = re.compile(r"reply\+([0-9a-f]{32})@", re.IGNORECASE)
_MESSAGE_ID_TOKEN = re.compile(r"<([0-9a-f]{32})\.\d+@", re.IGNORECASE)
_RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
_LANGUAGES = ["en", "fr", "de", "es", "it", "nl", "pt"]


@dataclass
class InboundReply:
    token: str | None
    sender: str
    subject: str
    text: str
    automatic: bool


def _token(msg: EmailMessage) -> str | None:
    for header in _RECIPIENT_HEADERS:
        for value in msg.get_all(header, []):
            found = _RECIPIENT_TOKEN.search(str(value))
            if found:
                return found.group(1).lower()
    for header in ("In-Reply-To", "References"):
        found = _MESSAGE_ID_TOKEN.search(str(msg.get(header, "")))
        if found:
            return found.group(1).lower()
    return None


class _TextOfHtml(HTMLParser):
    """Visible text of an HTML body: blocks and ``<br>`` become line breaks; scripts, styles,
    the head and ``<blockquote>`` (where mail clients put the quoted history) are dropped."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr", "table"})
    HIDDEN = frozenset({"script", "style", "head", "title", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _body_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    if part is not None:
        return str(part.get_content())
    part = msg.get_body(preferencelist=("html",))
    if part is not None:
        return html_to_text(str(part.get_content()))
    return ""


def new_text(text: str) -> str:
    """The reply without the quoted history and the signature."""
    from mailparser_reply import EmailReplyParser  # type: ignore[import-untyped]  # the email extra

    text = text.replace("\r\n", "\n")
    parsed = EmailReplyParser(languages=_LANGUAGES).read(text=text)
    first = parsed.replies[0].body.strip() if parsed.replies else ""
    return first or EmailReplyParser(languages=_LANGUAGES).parse_reply(text=text).strip()


def parse_inbound(raw: bytes) -> InboundReply:
    """The reply a relayed message holds; :class:`InvalidInput` when it is not one."""
    if not raw.strip():
        raise InvalidInput("the body is empty: send the raw message (message/rfc822)")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if not isinstance(msg, EmailMessage):
            raise InvalidInput("the body is not an e-mail message")
        senders = [addr for _, addr in getaddresses([str(v) for v in msg.get_all("From", [])]) if "@" in addr]
        if not senders:
            raise InvalidInput("the message has no From address: is it a raw e-mail (message/rfc822)?")
        text = _body_text(msg)
        subject = str(msg.get("Subject", ""))
        auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
        precedence = str(msg.get("Precedence", "")).strip().lower()
    except (LookupError, ValueError, TypeError, UnicodeError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"the message cannot be read: {exc}") from None
    return InboundReply(
        token=_token(msg),
        sender=senders[0],
        subject=subject,
        text=new_text(text) if text.strip() else "",
        automatic=auto not in ("", "no") or precedence in ("bulk", "junk", "auto_reply", "list"),
    )
