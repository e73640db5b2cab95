"""Widget version negotiation (the ``X-PocketPing-Version*`` headers on ``/connect``)."""

from __future__ import annotations

import re


def _parse(version: str) -> tuple[int, ...] | None:
    m = re.match(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if not m:
        return None
    return tuple(int(p or 0) for p in m.groups())


def version_headers(widget: str | None, minimum: str | None, latest: str | None) -> tuple[dict[str, str], str, str]:
    """Headers for the ``/connect`` response, the status, and its message.

    ``unsupported`` (below ``minimum``) means the request is refused with 426; ``outdated``
    (below ``latest``) is informational. Without a version header (an older widget or another
    client) nothing is said.
    """
    if minimum is None and latest is None:
        return {}, "ok", ""
    current = _parse(widget) if widget else None
    if current is None:
        return {}, "ok", ""
    status = "ok"
    if minimum is not None and (low := _parse(minimum)) is not None and current < low:
        status = "unsupported"
    elif latest is not None and (new := _parse(latest)) is not None and current < new:
        status = "outdated"
    headers = {"X-PocketPing-Version-Status": status}
    if minimum:
        headers["X-PocketPing-Min-Version"] = minimum
    if latest:
        headers["X-PocketPing-Latest-Version"] = latest
    message = ""
    if status != "ok":
        message = f"Widget version {widget} is {status}"
        if status == "unsupported":
            message += f"; this server needs {minimum} or newer"
        headers["X-PocketPing-Version-Message"] = message
    return headers, status, message
