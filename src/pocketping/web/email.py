"""The e-mail follow-up's routes: ``POST /webhooks/email`` (replies relayed by the mail server,
``message/rfc822`` with ``Authorization: Bearer <inbound_secret>``) and
``/email/unsubscribe/{token}`` (the ``List-Unsubscribe`` link: a page with a button on GET, and
RFC 8058 one-click on POST)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..mail.inbound import MAX_INBOUND, parse_inbound
from .parsing import BadRequest, error, request_body

if TYPE_CHECKING:
    from ..mail import EmailNotifier


def email_routes(notifier: EmailNotifier) -> list[Route]:
    async def inbound(request: Request) -> Response:
        if notifier.inbound_secret is None:
            return error(404, "not_found", "replies by e-mail are off: set EmailNotifier(inbound_secret=...)")
        if not notifier.authorized(request.headers.get("authorization")):
            return JSONResponse(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <inbound_secret>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "message/rfc822":
            raise BadRequest(415, "unsupported_media_type", "send the raw message as Content-Type: message/rfc822")
        reply = parse_inbound(await request_body(request, limit=MAX_INBOUND))
        try:
            answer = await notifier.receive(reply)
        except LookupError as exc:
            return error(404, "unknown_conversation", str(exc))
        return JSONResponse(answer)

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        session = await notifier.session_of_token(token)
        if session is None:
            return _page("Link not found", "This unsubscribe link is not valid (any more).", status=404)
        if request.method == "POST":
            await notifier.unsubscribe(session)
            return _page("Unsubscribed", "You will get no more e-mails about your conversations.")
        return _page(
            "Unsubscribe",
            "Stop e-mails about your conversations?",
            form='<form method="post"><button type="submit">Unsubscribe</button></form>',
        )

    return [
        Route("/webhooks/email", inbound, methods=["POST"]),
        Route("/email/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
    ]


def _page(title: str, text: str, *, form: str = "", status: int = 200) -> HTMLResponse:
    body = (
        f'<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width"><title>{html.escape(title)}</title></head>'
        f'<body style="font-family:sans-serif;max-width:30em;margin:3em auto"><h1>{html.escape(title)}</h1>'
        f"<p>{html.escape(text)}</p>{form}</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"})
