"""One command for the whole benchmark: ``.venv/bin/python bench/run.py`` (see bench/README.md).

Creates bench/.venv-pypi with the PyPI `pocketping` 1.12.0 package if missing and, when a
PostgreSQL server is selected, starts a throw-away PostgreSQL cluster for the run (pinned to
CPU 1, stopped by its PID at the end). Then, for each repetition, runs every server in turn (one
uvicorn worker pinned to CPU 0, the load generator pinned to CPU 1, both on 127.0.0.1), each
scenario against a fresh server process (and a fresh database), and writes
bench/results/<stamp>.json and bench/RESULTS.md (medians over the repetitions).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.services import PostgresServer  # noqa: E402  (the test suite's throw-away cluster)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MAIN_PY = Path(sys.executable)
PYPI_VENV = BENCH / ".venv-pypi"
PYPI_PY = PYPI_VENV / "bin" / "python"
PYPI_PKGS = ["pocketping==1.12.0", "fastapi", "uvicorn[standard]", "websockets"]

#: name -> (python, module, env); the order of the report's columns.
SERVERS: dict[str, tuple[Path, str, dict[str, str]]] = {
    "ceiling": (MAIN_PY, "ceiling", {}),
    "ours-memory": (MAIN_PY, "ours", {"BENCH_STORAGE": "memory", "BENCH_HOOKS": "seed"}),
    "ours-memory-nohooks": (MAIN_PY, "ours", {"BENCH_STORAGE": "memory", "BENCH_HOOKS": "none"}),
    "ours-memory-nolimits": (
        MAIN_PY, "ours", {"BENCH_STORAGE": "memory", "BENCH_HOOKS": "seed", "BENCH_LIMITS": "off"}
    ),
    "ours-sqlite": (MAIN_PY, "ours", {"BENCH_STORAGE": "sqlite", "BENCH_HOOKS": "seed"}),
    "ceiling-pg": (MAIN_PY, "ceiling_pg", {}),
    "ours-postgres": (MAIN_PY, "ours", {"BENCH_STORAGE": "postgres", "BENCH_HOOKS": "seed"}),
    "pypi": (PYPI_PY, "pypi_app", {}),
}
#: servers that get a fresh database (BENCH_PG_DSN) in the run's PostgreSQL cluster
PG_SERVERS = {"ceiling-pg", "ours-postgres"}
PG_CPU = 1  # the cluster shares CPU 1 with the load generator; CPU 0 stays the server's
FULL = {"connect": 10_000, "message": 20_000, "clients": 32, "streams": [100, 1000, 5000], "rounds": 3, "targeted": 20}
QUICK = {"connect": 1_000, "message": 2_000, "clients": 32, "streams": [100, 500], "rounds": 1, "targeted": 5}
LOAD_TIMEOUT = 900  # seconds, per scenario


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def ensure_pypi_venv() -> None:
    if PYPI_PY.exists():
        probe = subprocess.run(
            [str(PYPI_PY), "-c", "import importlib.metadata as m; print(m.version('pocketping'))"],
            capture_output=True, text=True,
        )
        if probe.stdout.strip() == "1.12.0":
            return
        shutil.rmtree(PYPI_VENV)
    log("creating bench/.venv-pypi with pocketping==1.12.0 from PyPI ...")
    subprocess.run([sys.executable, "-m", "venv", str(PYPI_VENV)], check=True)
    subprocess.run([str(PYPI_PY), "-m", "pip", "install", "-q", *PYPI_PKGS], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """The run's PostgreSQL 15 cluster: tests/services.py's ``PostgresServer`` (initdb in a temp
    dir as the ``postgres`` OS user, trust auth, 127.0.0.1 only, a free port, fsync off), pinned
    to CPU :data:`PG_CPU` once started. One fresh database per server process."""

    def __init__(self) -> None:
        self.server = PostgresServer()

    def start(self) -> Cluster:
        log("starting a PostgreSQL cluster for the run ...")
        try:
            self.server.start()  # bounded: initdb 120 s, listening 30 s, accepting 30 s
            assert self.server.proc is not None
            self._pin(self.server.proc.pid)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _pin(postmaster: int) -> None:
        """The postmaster and its children so far; backends forked later inherit it."""
        pids = [postmaster]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == postmaster:
                    pids.append(int(entry))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, {PG_CPU})

    def create_database(self) -> tuple[str, str]:
        dsn = self.server.create_database()
        return dsn, dsn.rsplit("/", 1)[1]

    def drop_database(self, name: str) -> None:
        try:
            self.server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # the cluster goes away at the end anyway
            log(f"  (could not drop database {name}: {exc})")

    def stop(self) -> None:
        """By its PID: SIGINT (fast shutdown), SIGKILL after 15 s; then the temp dir."""
        self.server.stop()


class Server:
    def __init__(self, name: str, cluster: Cluster | None = None) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"pp-bench-{name}-"))
        self.port = free_port()
        python, module, extra = SERVERS[name]
        env = {**os.environ, **extra, "BENCH_TMP": str(self.tmp)}
        env.pop("PYTHONPATH", None)
        self.cluster, self.dbname = cluster, None
        if name in PG_SERVERS:
            if cluster is None:
                raise RuntimeError(f"{name} needs the run's PostgreSQL cluster")
            env["BENCH_PG_DSN"], self.dbname = cluster.create_database()
        cmd = [
            "taskset", "-c", "0", str(python), "-m", "uvicorn", f"{module}:app",
            "--app-dir", str(BENCH / "servers"), "--host", "127.0.0.1", "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
            "--timeout-graceful-shutdown", "3", "--limit-concurrency", "20000", "--backlog", "4096",
        ]
        self.log = open(self.tmp / "server.log", "w")
        # cwd = the temp dir: nothing lands in the checkout, and the PyPI server cannot see src/.
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid  # taskset execs the server: same PID
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = (self.tmp / "server.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"{name} exited: {output}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{name} did not listen within 30 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.cluster is not None and self.dbname is not None:
            self.cluster.drop_database(self.dbname)
            self.dbname = None


def load(server: Server, *args: str) -> dict[str, Any]:
    cmd = ["taskset", "-c", "1", sys.executable, str(BENCH / "load.py"), "--port", str(server.port),
           "--pid", str(server.pid), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=LOAD_TIMEOUT)
    if out.returncode != 0:
        server.log.flush()
        server_log = (server.tmp / "server.log").read_text(errors="replace")[-6000:]
        raise RuntimeError(f"load {args} on {server.name} failed:\n{out.stderr[-3000:]}\nserver log:\n{server_log}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_run(names: list[str], sizes: dict[str, Any], cluster: Cluster | None) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        r: dict[str, Any] = {}
        started = time.monotonic()
        srv = Server(name, cluster)
        try:
            log(f"  {name}: connect x{sizes['connect']}")
            r["connect"] = load(srv, "--scenario", "connect", "--total", str(sizes["connect"]),
                                "--inflight", str(sizes["clients"]))
            log(f"  {name}: message x{sizes['message']}")
            r["message"] = load(srv, "--scenario", "message", "--total", str(sizes["message"]),
                                "--inflight", str(sizes["clients"]))
        finally:
            srv.stop()
        for k in sizes["streams"]:
            srv = Server(name, cluster)
            try:
                log(f"  {name}: push to {k} streams")
                r[f"push{k}"] = load(srv, "--scenario", "push", "--streams", str(k),
                                     "--rounds", str(sizes["rounds"]), "--targeted", str(sizes["targeted"]))
            finally:
                srv.stop()
        results[name] = r
        log(f"  {name}: done in {time.monotonic() - started:.0f} s")
    return results


# -- report ---------------------------------------------------------------------------------

#: (scenario, key, label, lower is better)
FIGURES = [
    ("connect", "cpu_us_per_op", "connect: server CPU µs/op", True),
    ("connect", "cpu_us_first10", "connect: CPU µs/op, first 10 %", True),
    ("connect", "cpu_us_last10", "connect: CPU µs/op, last 10 %", True),
    ("connect", "throughput", "connect: sessions/s", False),
    ("connect", "p50_first10_ms", "connect: p50 ms, first 10 %", True),
    ("connect", "p50_last10_ms", "connect: p50 ms, last 10 %", True),
    ("message", "cpu_us_per_op", "message: server CPU µs/op", True),
    ("message", "throughput", "message: messages/s", False),
    ("message", "p50_ms", "message: p50 ms", True),
    ("message", "p99_ms", "message: p99 ms", True),
]
for _k in (100, 1000, 5000, 500):
    FIGURES += [
        (f"push{_k}", "cpu_us_per_push", f"push to {_k} streams: CPU µs/push", True),
        (f"push{_k}", "push_p50_ms", f"push to {_k} streams: p50 ms", True),
        (f"push{_k}", "push_p99_ms", f"push to {_k} streams: p99 ms", True),
        (f"push{_k}", "push_last_ms", f"push to {_k} streams: last stream ms", True),
        (f"push{_k}", "targeted_p50_ms", f"one targeted reply, {_k} open: p50 ms", True),
        (f"push{_k}", "kb_per_stream", f"RSS per open stream, {_k} open: KB", True),
    ]


def medians(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in runs[0]:
        for scen in runs[0][name]:
            for key, value in runs[0][name][scen].items():
                if isinstance(value, (int, float)):
                    vals = [run[name][scen][key] for run in runs]
                    out.setdefault(name, {}).setdefault(scen, {})[key] = statistics.median(vals)
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio_table(runs: list[dict[str, dict[str, Any]]], ours: str, ref: str, scen: str, key: str) -> float | None:
    """Median over runs of the per-run ratio ours/ref (both from the same run)."""
    try:
        vals = [run[ours][scen][key] / run[ref][scen][key] for run in runs if run[ref][scen][key]]
    except KeyError:
        return None
    return statistics.median(vals) if vals else None


#: (ours, reference) pairs of the ratio table, in column order
RATIOS = [
    ("ours-memory", "ceiling"),
    ("ours-memory-nohooks", "ceiling"),
    ("ours-sqlite", "ceiling"),
    ("ours-postgres", "ceiling-pg"),
    ("ours-memory", "pypi"),
    ("ours-sqlite", "pypi"),
]
#: the headline table's columns: (ours, reference, heading)
HEADLINE = [
    ("ours-memory", "ceiling", "ours-memory (seed hooks) / ceiling"),
    ("ours-memory-nohooks", "ceiling", "ours-memory-nohooks / ceiling"),
    ("ours-memory-nolimits", "ceiling", "ours-memory-nolimits / ceiling"),
    ("ours-postgres", "ceiling-pg", "ours-postgres (seed hooks) / ceiling-pg"),
]


def report(runs: list[dict[str, dict[str, Any]]], meta: dict[str, Any]) -> str:
    med = medians(runs)
    names = [n for n in SERVERS if n in med]
    lines = [
        "## Measured figures",
        "",
        f"Run {meta['date']} on {meta['machine']}; {meta['repetitions']} repetition(s), median shown"
        f" ({'quick sizes' if meta['quick'] else 'full sizes'}). Raw data: `bench/results/{meta['stamp']}.json`."
        " `ours-*` servers are the README's quick-start app (`servers/ours.py`) with its three hooks"
        " (plain functions logging at INFO, logging unconfigured) unless named `-nohooks`.",
        "",
        "Ratios are computed per run (same run, same machine state) and the median ratio is shown;"
        " for throughput a ratio above 1 is better, for everything else below 1 is better.",
        "",
    ]
    head = [(o, r, h) for o, r, h in HEADLINE if o in med and r in med]
    if head:
        rows = [("connect", "cpu_us_per_op", "connect: server CPU µs/op"),
                ("message", "cpu_us_per_op", "message: server CPU µs/op")]
        rows += [(f"push{k}", "push_p99_ms", f"push to {k:,} streams: p99 ms") for k in meta["sizes"]["streams"]]
        lines += [
            "### Hooks and storage against the ceilings",
            "",
            "| figure | " + " | ".join(h for _o, _r, h in head) + " |",
            "|---|" + "---:|" * len(head),
        ]
        for scen, key, label in rows:
            cells = [fmt(ratio_table(runs, o, r, scen, key)) for o, r, _h in head]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if "ours-memory" in med and "ours-memory-nohooks" in med:
            seed, bare = med["ours-memory"], med["ours-memory-nohooks"]
            cost = [
                f"{scen} {seed[scen]['cpu_us_per_op'] - bare[scen]['cpu_us_per_op']:+.1f} µs/op"
                for scen in ("connect", "message")
            ]
            lines += ["", "The seed hooks' cost, ours-memory − ours-memory-nohooks (medians): " + ", ".join(cost) + "."]
        if "ours-memory" in med and "ours-memory-nolimits" in med:
            seed, free = med["ours-memory"], med["ours-memory-nolimits"]
            cost = [
                f"{scen} {seed[scen]['cpu_us_per_op'] - free[scen]['cpu_us_per_op']:+.1f} µs/op"
                for scen in ("connect", "message")
            ]
            label = "The rate limits' cost, ours-memory − ours-memory-nolimits (medians): "
            lines += ["", label + ", ".join(cost) + "."]
        lines.append("")
    lines += [
        "### Absolute figures",
        "",
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    figures = [f for f in FIGURES if any(f[0] in med[n] for n in names)]
    for scen, key, label, _lower in figures:
        lines.append(f"| {label} | " + " | ".join(fmt(med[n].get(scen, {}).get(key)) for n in names) + " |")
    pairs = [(o, r) for o, r in RATIOS if o in med and r in med]
    if pairs:
        lines += [
            "",
            "### Ratios",
            "",
            "| figure | " + " | ".join(f"{o} / {r}" for o, r in pairs) + " |",
            "|---|" + "---:|" * len(pairs),
        ]
        for scen, key, label, _lower in figures:
            lines.append(f"| {label} | " + " | ".join(fmt(ratio_table(runs, o, r, scen, key)) for o, r in pairs) + " |")
    return "\n".join(lines) + "\n"


def write_results_md(section: str) -> None:
    """Replace the generated section of bench/RESULTS.md, keeping everything else (notes,
    other engineers' sections such as "Scaling")."""
    path = BENCH / "RESULTS.md"
    begin, end = "<!-- bench/run.py: begin -->", "<!-- bench/run.py: end -->"
    block = f"{begin}\n{section}{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs (nproc), {model}, Linux {platform.release()}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the harness")
    ap.add_argument("--runs", type=int, default=3, help="repetitions (median reported); default 3")
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    ap.add_argument("--no-report", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is required")
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown or not names:
        sys.exit(f"unknown server(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SERVERS)}")
    if "pypi" in names:
        ensure_pypi_venv()
    sizes = QUICK if args.quick else FULL
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers and the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = Cluster().start() if PG_SERVERS & set(names) else None
    runs = []
    try:
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}")
            runs.append(one_run(names, sizes, cluster))
    finally:
        if cluster is not None:
            log("stopping the PostgreSQL cluster")
            cluster.stop()
    meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "repetitions": args.runs, "quick": args.quick, "stamp": stamp, "sizes": sizes}
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / f"{stamp}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    section = report(runs, meta)
    print(section)
    if not args.no_report:
        write_results_md(section)


if __name__ == "__main__":
    main()
