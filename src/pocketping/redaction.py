"""Secrets never reach a log line.

Every secret PocketPing is given (bot tokens, signing and webhook secrets, the console token,
the identity secret, the bridge key) is registered here; a filter on the loggers that can print
one (ours, httpx's request lines, which carry Telegram's ``/bot<token>/`` URLs, and uvicorn's
access and error logs, which carry query strings) replaces it with ``***`` in the message and
in the traceback, whatever the level.
"""

from __future__ import annotations

import logging
import threading

#: Loggers whose records may hold a secret.
LOGGERS = (
    "pocketping",
    "pocketping.bridges",
    "pocketping.broker",
    "pocketping.handlers",
    "pocketping.realtime",
    "pocketping.web",
    "httpx",
    "httpcore",
    "uvicorn.access",
    "uvicorn.error",
    "gunicorn.access",
    "gunicorn.error",
)
MASK = "***"
#: Shorter values are not treated as secrets (they would mask ordinary words).
MIN_LENGTH = 8


class SecretFilter(logging.Filter):
    """Replaces every registered secret in a record's message and traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            self.secrets = self.secrets | {s for s in secrets if isinstance(s, str) and len(s) >= MIN_LENGTH}

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


FILTER = SecretFilter()
_installed = False


def protect(*secrets: str | None) -> None:
    """Keep ``secrets`` out of every log line from now on."""
    global _installed
    FILTER.add(*secrets)
    if not _installed:
        _installed = True
        for name in LOGGERS:
            logging.getLogger(name).addFilter(FILTER)
