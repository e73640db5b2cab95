"""Load generator speaking the widget protocol (see /work/shared/protocol.md §4.1, §4.2, §5–§7).

Runs against one server already listening on 127.0.0.1 (``--port``) whose PID is given
(``--pid``): server CPU time per operation comes from /proc/<pid>/stat (utime + stime, all
threads; read at ns resolution from the threads' schedstat, see ``CPU``), memory from /proc/<pid>/status (VmRSS). HTTP is a minimal keep-alive HTTP/1.1
client on asyncio streams (cheap, so the load generator is rarely the bottleneck); WebSocket
streams use the ``websockets`` library (no compression, like a plain client).

    python bench/load.py --port 8100 --pid 1234 --scenario connect
    python bench/load.py --port 8100 --pid 1234 --scenario message
    python bench/load.py --port 8100 --pid 1234 --scenario push --streams 1000

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import sys
import time
from typing import Any

import websockets
from websockets.asyncio.client import connect as ws_connect

CLK_TCK = os.sysconf("SC_CLK_TCK")
PREFIX = "/pocketping"
METADATA = {
    "url": "https://shop.example/pricing",
    "referrer": "https://www.google.com/",
    "pageTitle": "Pricing",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "timezone": "Europe/Paris",
    "language": "fr-FR",
    "screenResolution": "1920x1080",
    "botSignals": {"webdriver": False, "plugins": False, "languages": False, "chrome": False, "permissions": False},
}


def _stat_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime (fields 14, 15), all threads


def _schedstat_seconds(pid: int) -> float:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


class CPU:
    """Server CPU time. utime + stime from /proc/<pid>/stat counts in clock ticks (10 ms);
    the same run time summed from each live thread's schedstat is exact to the ns. Deltas use
    schedstat unless a thread ended meanwhile (the two then disagree by more than 2 ticks)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def read(self) -> tuple[float, float]:
        return _stat_seconds(self.pid), _schedstat_seconds(self.pid)

    @staticmethod
    def delta(a: tuple[float, float], b: tuple[float, float]) -> float:
        coarse, fine = b[0] - a[0], b[1] - a[1]
        return fine if abs(coarse - fine) <= 2.5 / CLK_TCK else coarse


def cpu_seconds(pid: int) -> tuple[float, float]:
    return CPU(pid).read()


def cpu_delta(a: tuple[float, float], b: tuple[float, float]) -> float:
    return CPU.delta(a, b)


async def settle(pid: int, window: float = 0.05, idle: float = 0.02, limit: float = 3.0) -> None:
    """Wait until the server is idle again (under ``idle`` of a CPU over ``window`` s), at most
    ``limit`` s: work deferred past the answers (hooks on worker threads, a storage writer
    thread) is then counted in the scenario's CPU."""
    deadline = time.perf_counter() + limit
    last = cpu_seconds(pid)
    while time.perf_counter() < deadline:
        await asyncio.sleep(window)
        now = cpu_seconds(pid)
        if cpu_delta(last, now) < idle * window:
            return
        last = now


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def visitor_id() -> str:
    return f"{int(time.time() * 1000):x}-{secrets.token_hex(5)}"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[i]


class HTTP:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:
                pass

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"X-PocketPing-Version: 2.6.0\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.writer.write(head + data)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            payload = b"".join(parts)
        else:
            payload = await self.reader.readexactly(length)
        return status, json.loads(payload) if payload else None


async def connect_visitor(client: HTTP) -> str:
    status, body = await client.post(
        PREFIX + "/connect", {"visitorId": visitor_id(), "sessionId": None, "metadata": METADATA}
    )
    if status != 200:
        raise RuntimeError(f"/connect answered {status}: {body}")
    return body["sessionId"]


async def pool(n_clients: int, port: int) -> list[HTTP]:
    clients = [HTTP(port) for _ in range(n_clients)]
    await asyncio.gather(*(c.open() for c in clients))
    return clients


# -- scenarios ------------------------------------------------------------------------------


async def scenario_connect(port: int, pid: int, total: int, inflight: int) -> dict[str, Any]:
    clients = await pool(inflight, port)
    await connect_visitor(clients[0])  # warm-up (lazy start, imports)
    lat: list[float] = [0.0] * total
    tenth = total // 10
    marks: dict[int, tuple[float, float]] = {}
    counter = 0
    next_index = 0

    async def worker(c: HTTP) -> None:
        nonlocal counter, next_index
        while next_index < total:
            i = next_index
            next_index += 1
            t = time.perf_counter()
            await connect_visitor(c)
            lat[i] = time.perf_counter() - t
            counter += 1
            if counter in (tenth, total - tenth):
                marks[counter] = cpu_seconds(pid)

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    wall = time.perf_counter() - t0
    await settle(pid)
    cpu1 = cpu_seconds(pid)
    await asyncio.gather(*(c.close() for c in clients))
    return {
        "ops": total,
        "throughput": total / wall,
        "cpu_us_per_op": cpu_delta(cpu0, cpu1) / total * 1e6,
        "cpu_us_first10": cpu_delta(cpu0, marks[tenth]) / tenth * 1e6,
        "cpu_us_last10": cpu_delta(marks[total - tenth], cpu1) / tenth * 1e6,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "p50_first10_ms": pct(lat[:tenth], 0.5) * 1e3,
        "p50_last10_ms": pct(lat[-tenth:], 0.5) * 1e3,
        "rss_kb_after": rss_kb(pid),
    }


async def scenario_message(port: int, pid: int, total: int, n_clients: int) -> dict[str, Any]:
    clients = await pool(n_clients, port)
    sids = [await connect_visitor(c) for c in clients]
    per = total // n_clients
    lat: list[float] = []

    async def worker(c: HTTP, sid: str) -> None:
        for i in range(per):
            t = time.perf_counter()
            status, body = await c.post(
                PREFIX + "/message",
                {"sessionId": sid, "content": f"Hello, I have a question about pricing ({i})", "sender": "visitor",
                 "attachmentIds": []},
            )
            lat.append(time.perf_counter() - t)
            if status != 200 or "messageId" not in body:
                raise RuntimeError(f"/message answered {status}: {body}")

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, s) for c, s in zip(clients, sids)))
    wall = time.perf_counter() - t0
    await settle(pid)
    cpu1 = cpu_seconds(pid)
    await asyncio.gather(*(c.close() for c in clients))
    ops = per * n_clients
    return {
        "ops": ops,
        "throughput": ops / wall,
        "cpu_us_per_op": cpu_delta(cpu0, cpu1) / ops * 1e6,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
    }


class Stream:
    """One visitor's open WebSocket; records when each operator message arrives."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[float] | None = None

    async def open(self, port: int) -> None:
        self.ws = await ws_connect(
            f"ws://127.0.0.1:{port}{PREFIX}/stream?sessionId={self.sid}",
            compression=None,
            open_timeout=60,
            ping_interval=None,
            max_queue=64,
        )
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                now = time.perf_counter()
                if self.waiter is not None and not self.waiter.done() and '"operator"' in text:
                    self.waiter.set_result(now)
        except websockets.ConnectionClosed:
            pass

    def arm(self) -> asyncio.Future[float]:
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            await asyncio.wait([self.task], timeout=5)


async def scenario_push(port: int, pid: int, k: int, rounds: int, targeted: int) -> dict[str, Any]:
    # K visitors: /connect each (16 in flight), then open one WebSocket per session.
    clients = await pool(16, port)
    sids: list[str] = []

    async def make(c: HTTP, n: int) -> None:
        for _ in range(n):
            sids.append(await connect_visitor(c))

    await asyncio.gather(*(make(c, k // 16 + (1 if i < k % 16 else 0)) for i, c in enumerate(clients)))
    await asyncio.sleep(1.0)
    rss0 = rss_kb(pid)
    streams = [Stream(s) for s in sids]
    sem = asyncio.Semaphore(64)

    async def open_one(s: Stream) -> None:
        async with sem:
            await s.open(port)

    t_open = time.perf_counter()
    await asyncio.gather(*(open_one(s) for s in streams))
    open_wall = time.perf_counter() - t_open
    await asyncio.sleep(2.0)
    rss1 = rss_kb(pid)
    await asyncio.gather(*(c.close() for c in clients))
    clients = []
    # A fresh connection: the setup ones sat idle past the server's keep-alive timeout.
    trigger = HTTP(port)
    await trigger.open()

    fan: list[dict[str, float]] = []
    for _ in range(rounds):
        futures = [s.arm() for s in streams]
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        status, _ = await trigger.post("/bench/push", {"sessionIds": sids, "content": "Hello from the operator"})
        if status != 200:
            raise RuntimeError(f"/bench/push answered {status}")
        done, pending = await asyncio.wait(futures, timeout=120)
        if pending:
            raise RuntimeError(f"{len(pending)} of {k} streams got no push within 120 s")
        lat = [f.result() - t0 for f in futures]
        await asyncio.sleep(0.2)
        await settle(pid)
        cpu1 = cpu_seconds(pid)
        fan.append({
            "p50_ms": pct(lat, 0.5) * 1e3,
            "p99_ms": pct(lat, 0.99) * 1e3,
            "last_ms": max(lat) * 1e3,
            "cpu_us_per_push": cpu_delta(cpu0, cpu1) / k * 1e6,
        })
        await asyncio.sleep(0.3)

    one: list[float] = []
    for i in range(targeted):
        s = streams[(i * 7919) % k]
        fut = s.arm()
        t0 = time.perf_counter()
        await trigger.post("/bench/push", {"sessionIds": [s.sid], "content": "A targeted reply"})
        await asyncio.wait_for(fut, 30)
        one.append(fut.result() - t0)

    sem = asyncio.Semaphore(256)

    async def close_one(s: Stream) -> None:
        async with sem:
            await s.close()

    await asyncio.gather(*(close_one(s) for s in streams))
    await trigger.close()
    med = lambda key: statistics.median(r[key] for r in fan)  # noqa: E731
    return {
        "streams": k,
        "open_seconds": open_wall,
        "rss_kb_before": rss0,
        "rss_kb_after": rss1,
        "kb_per_stream": (rss1 - rss0) / k,
        "push_p50_ms": med("p50_ms"),
        "push_p99_ms": med("p99_ms"),
        "push_last_ms": med("last_ms"),
        "cpu_us_per_push": med("cpu_us_per_push"),
        "rounds": fan,
        "targeted_p50_ms": pct(one, 0.5) * 1e3,
        "targeted_p99_ms": pct(one, 0.99) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--scenario", choices=["connect", "message", "push"], required=True)
    ap.add_argument("--total", type=int, default=10_000)
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--targeted", type=int, default=20)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.scenario == "connect":
        result = asyncio.run(scenario_connect(args.port, args.pid, args.total, args.inflight))
    elif args.scenario == "message":
        result = asyncio.run(scenario_message(args.port, args.pid, args.total, args.inflight))
    else:
        result = asyncio.run(scenario_push(args.port, args.pid, args.streams, args.rounds, args.targeted))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
