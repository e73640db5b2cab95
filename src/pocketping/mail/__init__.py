"""E-mail follow-up: replies a visitor has not seen are e-mailed to them, and their answers by
e-mail come back into the conversation. See :class:`EmailNotifier`."""

from .notifier import EmailNotifier

__all__ = ["EmailNotifier"]
