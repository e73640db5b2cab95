"""An app for ``pocketping operator ... --app tests.apps.accounts_app:pp``: SQLite at ``$PP_DB``."""

from __future__ import annotations

import os

from pocketping import PocketPing, SQLiteStorage

pp = PocketPing(storage=SQLiteStorage(os.environ["PP_DB"]), rate_limits=None)
