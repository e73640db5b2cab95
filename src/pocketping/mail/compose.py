"""The follow-up e-mail: a plain-text and an HTML part built from stored messages.

Visitor and operator text goes into the bodies only, escaped in the HTML part; headers are
built from settings and checked addresses, and the standard library's ``email`` policy refuses
a header value with a line break, so no text can add a header.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from ..errors import InvalidInput

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# What an address the visitor typed must look like before it goes into a To header.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$"
)


def one_line(text: str) -> str:
    """``text`` with control characters (line breaks among them) turned into spaces."""
    return _CONTROL.sub(" ", text).strip()


def checked_address(value: object, what: str) -> Address:
    """An e-mail address as a header value; :class:`InvalidInput` naming ``what`` otherwise."""
    if not isinstance(value, str) or len(value) > 254 or not _ADDRESS.match(value.strip()):
        raise InvalidInput(f"{what} must be an e-mail address such as support@example.com, not {value!r}")
    local, _, domain = value.strip().rpartition("@")
    return Address(username=local, domain=domain.lower())


@dataclass
class Line:
    """One message as the e-mail shows it."""

    who: str
    text: str
    at: datetime


@dataclass
class FollowUp:
    """Everything one follow-up e-mail holds."""

    sender: Address
    sender_name: str
    to: Address
    subject: str
    greeting_name: str | None
    replies: list[Line]
    context: list[Line] = field(default_factory=list)
    page_url: str | None = None
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None
    reply_to: Address | None = None
    message_id: str = ""
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)


def _intro(mail: FollowUp) -> str:
    if len(mail.replies) == 1:
        return "You have a new reply in your conversation:"
    return "You have new replies in your conversation:"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC")


def text_body(mail: FollowUp) -> str:
    out = [f"Hello {mail.greeting_name}," if mail.greeting_name else "Hello,", ""]
    out += [_intro(mail), ""]
    for line in mail.replies:
        out += [f"{line.who} ({_when(line.at)}):", line.text, ""]
    if mail.context:
        out += ["Earlier in the conversation:", ""]
        for line in mail.context:
            out += [f"{line.who}: {line.text}"]
        out.append("")
    if mail.reply_to is not None:
        out.append("Reply to this e-mail to answer; your reply goes into the conversation.")
    if mail.page_url:
        out.append(f"Continue the conversation: {mail.page_url}")
    if mail.unsubscribe_url:
        out += ["", f"No more e-mails about your conversations: {mail.unsubscribe_url}"]
    return "\n".join(out) + "\n"


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>\n")


def html_body(mail: FollowUp) -> str:
    e = html.escape
    parts = [
        '<!doctype html><html><body style="font-family:sans-serif;line-height:1.4;color:#222">',
        f"<p>{'Hello ' + e(mail.greeting_name) + ',' if mail.greeting_name else 'Hello,'}</p>",
        f"<p>{_intro(mail)}</p>",
    ]
    for line in mail.replies:
        parts.append(
            f'<div style="margin:0 0 12px;padding:8px 12px;border-left:3px solid #6366f1">'
            f'<div style="color:#555;font-size:13px"><b>{e(line.who)}</b> · {e(_when(line.at))}</div>'
            f"<div>{_html_text(line.text)}</div></div>"
        )
    if mail.context:
        parts.append('<p style="color:#555;font-size:13px">Earlier in the conversation:</p>')
        for line in mail.context:
            parts.append(f'<p style="color:#555;font-size:13px"><b>{e(line.who)}:</b> {_html_text(line.text)}</p>')
    if mail.reply_to is not None:
        parts.append("<p>Reply to this e-mail to answer; your reply goes into the conversation.</p>")
    if mail.page_url:
        parts.append(f'<p><a href="{e(mail.page_url, quote=True)}">Continue the conversation</a></p>')
    if mail.unsubscribe_url:
        parts.append(
            f'<p style="color:#888;font-size:12px"><a href="{e(mail.unsubscribe_url, quote=True)}">'
            "No more e-mails about your conversations</a></p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build(mail: FollowUp) -> EmailMessage:
    """The message to send (``EmailMessage`` with the default policy: header values are checked)."""
    msg = EmailMessage()
    msg["From"] = Address(
        display_name=one_line(mail.sender_name), username=mail.sender.username, domain=mail.sender.domain
    )
    msg["To"] = mail.to
    msg["Subject"] = one_line(mail.subject)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = mail.message_id
    if mail.in_reply_to:
        msg["In-Reply-To"] = mail.in_reply_to
    if mail.references:
        msg["References"] = " ".join(mail.references)
    if mail.reply_to is not None:
        msg["Reply-To"] = mail.reply_to
    unsubscribe = [f"<{u}>" for u in (mail.unsubscribe_url, mail.unsubscribe_mailto) if u]
    if unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(unsubscribe)
        if mail.unsubscribe_url:
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    msg.set_content(text_body(mail))
    msg.add_alternative(html_body(mail), subtype="html")
    return msg
