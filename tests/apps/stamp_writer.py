"""Writes messages into one session from its own process: ``python -m tests.apps.stamp_writer
<dsn> <session_id> <count> <tag>``. Used to check stamps across processes."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from pocketping import Message, PostgresStorage
from pocketping.models import new_id


async def main(dsn: str, session_id: str, count: int, tag: str) -> None:
    storage = PostgresStorage(dsn, max_size=4)
    await storage.open()
    try:

        async def write(i: int) -> None:
            message = Message(new_id("msg"), session_id, f"{tag} {i}", "operator", datetime.now(UTC))
            await storage.save_message(session_id, message)

        for start in range(0, count, 4):  # four at a time: several connections race
            await asyncio.gather(*(write(i) for i in range(start, min(start + 4, count))))
    finally:
        await storage.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
