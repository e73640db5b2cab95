"""Scaling benchmark: one PocketPing process vs two, on PostgreSQL storage + a broker.

    .venv/bin/python bench/scale.py [--duration 8] [--sessions 40] [--concurrency 16]

Starts a throw-away PostgreSQL cluster and redis-server (tests/services.py), then, for each
setup, uvicorn processes of tests/apps/scale_app.py on 127.0.0.1. Each session has one
WebSocket open on one process (sessions spread over the processes); clients post operator
messages (``POST /test/send`` -> ``pp.send_message``) to the processes in turn, so with two
processes half of the messages cross the broker. Measured: stored-and-acknowledged messages per
second, and push latency (from just before the POST to the frame arriving on the WebSocket),
p50 / p99. Every process is stopped by PID at the end; the run is bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.services import AppProcess, PostgresServer, RedisServer  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402


async def run_load(urls: list[str], sessions: int, concurrency: int, duration: float) -> dict[str, float]:
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    received = 0
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=concurrency * 2)) as http:
        sids = []
        for i in range(sessions):
            r = await http.post(
                urls[i % len(urls)] + "/pocketping/connect",
                json={"visitorId": f"bench-{i}-{time.time_ns()}", "sessionId": None, "metadata": {}},
            )
            sids.append(r.json()["sessionId"])

        async def listen(i: int, sid: str, ready: asyncio.Event) -> None:
            nonlocal received
            url = urls[i % len(urls)].replace("http://", "ws://") + f"/pocketping/stream?sessionId={sid}"
            async with ws_connect(url, max_queue=None) as ws:
                ready.set()
                async for text in ws:
                    frame = json.loads(text)
                    if frame["type"] == "message":
                        t0 = sent_at.pop(frame["data"]["content"], None)
                        if t0 is not None:
                            latencies.append(time.perf_counter() - t0)
                            received += 1

        readies = [asyncio.Event() for _ in sids]
        listeners = [asyncio.create_task(listen(i, sid, readies[i])) for i, sid in enumerate(sids)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 30)
        await asyncio.sleep(0.5)

        counter = itertools.count()
        acked = 0
        errors = 0
        stop_at = time.perf_counter() + duration

        async def client(c: int) -> None:
            nonlocal acked, errors
            while time.perf_counter() < stop_at:
                n = next(counter)
                sid = sids[n % len(sids)]
                url = urls[(n // len(sids) + c) % len(urls)]  # the processes in turn
                content = f"m{n}"
                sent_at[content] = time.perf_counter()
                r = await http.post(url + "/test/send", json={"sessionId": sid, "content": content})
                if r.status_code == 200:
                    acked += 1
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
        deadline = time.perf_counter() + 5
        while sent_at and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    latencies.sort()
    return {
        "msgs_per_s": acked / elapsed,
        "acked": acked,
        "pushed": received,
        "lost": len(sent_at),
        "errors": errors,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per setup")
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent senders")
    args = parser.parse_args()

    pg = PostgresServer().start()
    redis = RedisServer().start()
    log_dir = Path(tempfile.mkdtemp(prefix="pocketping-bench-"))
    rows = []
    try:
        for label, broker, processes in (
            ("1 process, Redis broker", "redis", 1),
            ("2 processes, Redis broker", "redis", 2),
            ("2 processes, PostgreSQL broker", "postgres", 2),
        ):
            env = {"PP_DSN": pg.create_database(), "PP_BROKER": broker, "PP_REDIS_URL": redis.url, "PP_POOL": "10"}
            apps = [AppProcess("tests.apps.scale_app:app", env, log_dir) for _ in range(processes)]
            try:
                for app in apps:
                    app.start()
                result = asyncio.run(run_load([a.url for a in apps], args.sessions, args.concurrency, args.duration))
            finally:
                for app in apps:
                    app.stop()
            rows.append((label, result))
            print(f"{label}: {json.dumps({k: round(v, 1) for k, v in result.items()})}", flush=True)
    finally:
        redis.stop()
        pg.stop()

    print()
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{args.sessions} sessions (one WebSocket each), {args.concurrency} concurrent senders, {args.duration:g} s")
    print()
    print("| setup | msgs/s | push p50 | push p99 | pushed / acked | lost |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in rows:
        print(
            f"| {label} | {r['msgs_per_s']:.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms "
            f"| {r['pushed']:.0f} / {r['acked']:.0f} | {r['lost']:.0f} |"
        )


if __name__ == "__main__":
    main()
