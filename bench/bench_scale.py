"""What do connections cost the load generator? RSS and CPU per 1,000 idle and active ones; connect rate.

One server (asyncio or selectors variant) started here with a listen backlog of
4096 (this machine's somaxconn cap): with the tutorial's listen(6), a burst of
connects loses SYNs and the connect rate would measure the server's accept
queue, not the harness. Then four headless Locust runs of scenarios/chat.py,
each its own process (so its CPU and memory are its own), at a small and a
large connection count, idle (one message an hour) and active (one message a
second per connection). Per-1,000 figures are the difference between the two
counts, so Locust's fixed cost cancels. The connect rate is the large idle
run's spawn: every user at once, timed by the server's connection count.

    python bench/bench_scale.py [--server asyncio] [--connections 200,2000] [--window 6]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.results.histogram_file import Interval, load_histogram_file
from harness.kernel import ConnectionCounter
from harness.server_process import RunningServer, ServerStartError, start_server
from server.args import Parser

BACKLOG = 4096
MAX_CONNECTIONS = 20_000
IDLE_THINK = 3600.0  # one message an hour: connected, silent
ACTIVE_THINK = 1.0  # one message a second per connection
SETTLE_S = 2.0


@dataclass(frozen=True)
class Measure:
    connections: int
    think: float
    rss_bytes: int
    cpu_percent: float  # of one core, over the window
    messages_per_s: float
    connect_s: float  # first to last connection seen by the server

    @property
    def connect_rate(self) -> float:
        return self.connections / self.connect_s if self.connect_s > 0 else float("nan")


def wait_connections(counter: ConnectionCounter, wanted: int, proc: subprocess.Popen, timeout: float) -> tuple[float, float]:
    """(first, last) perf_counter seconds at which the server saw its first and its ``wanted``-th connection."""
    first = None
    deadline = time.perf_counter() + timeout
    while proc.poll() is None and time.perf_counter() < deadline:
        n = counter.count()
        now = time.perf_counter()
        if n and first is None:
            first = now
        if n >= wanted:
            return first or now, now
        time.sleep(0.005)
    raise RuntimeError(f"the server saw {counter.count()} of {wanted} connections within {timeout:.0f} s")


def measure(server: RunningServer, connections: int, think: float, window: float, tmp: Path) -> Measure:
    """One Locust run: spawn every user at once, settle, then read CPU and RSS over ``window`` seconds."""
    hdr = tmp / f"hdr-{connections}-{think:g}.json"
    run_s = 30 + SETTLE_S + window  # the spawn is waited for below; Locust's -t only bounds the run
    argv = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "chat.py"), "--headless",
        "--host", server.url, "-u", str(connections), "-r", str(connections), "-t", f"{run_s:.0f}s",
        "--think-time", f"{think:g}", "--messages-per-session", "100000", "--stop-timeout", "2",
        "--hdr-file", str(hdr), "--loglevel", "ERROR", "--only-summary",
    ]  # fmt: skip
    with open(tmp / f"locust-{connections}-{think:g}.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        counter = ConnectionCounter(server.pid, server.port)
        first, last = wait_connections(counter, connections, proc, timeout=30)
        time.sleep(SETTLE_S)  # active users start within their first think time
        me = psutil.Process(proc.pid)
        t0, c0 = time.time(), sum(me.cpu_times()[:2])
        time.sleep(window)
        t1, c1 = time.time(), sum(me.cpu_times()[:2])
        rss = me.memory_info().rss
        if counter.count() < connections:
            raise RuntimeError(f"connections dropped to {counter.count()} of {connections} during the window")
        os.killpg(proc.pid, signal.SIGTERM)  # Locust stops its users (they quit) and writes its file
        proc.wait(30)
        intervals = load_histogram_file(hdr).intervals
        messages = sum(_count(row) for row in intervals if t0 <= row.t and row.t + 1 <= t1)
        seconds = max(1, int(t1) - int(t0) - 1)
        return Measure(connections, think, rss, 100.0 * (c1 - c0) / (t1 - t0), messages / seconds, last - first)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _count(row: Interval) -> int:
    from hdrh.histogram import HdrHistogram

    encoded = row.histograms.get("message")
    return HdrHistogram.decode(encoded).get_total_count() if encoded else 0


def per_thousand(small: Measure, large: Measure) -> tuple[float, float]:
    """(MB of RSS, % of a core) per 1,000 connections, from the difference of two counts."""
    k = (large.connections - small.connections) / 1000
    return (large.rss_bytes - small.rss_bytes) / 1e6 / k, (large.cpu_percent - small.cpu_percent) / k


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="asyncio", choices=("asyncio", "selectors"), help="variant (default asyncio)")
    p.add_argument("--connections", default="200,2000", help="small,large connection counts (default 200,2000)")
    p.add_argument("--window", type=float, default=6.0, help="seconds of CPU measurement per run (default 6)")
    args = p.parse_args(argv)
    try:
        small, large = (int(x) for x in args.connections.split(","))
    except ValueError:
        p.error(f"--connections wants two counts, small,large (got {args.connections!r})")
    if not 1 <= small < large <= MAX_CONNECTIONS:
        p.error(f"--connections: need 1 <= small < large <= {MAX_CONNECTIONS} (got {args.connections})")
    if not 1 <= args.window <= 60:
        p.error("--window must be 1..60 seconds")
    args.small, args.large = small, large
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from harness.host import raise_nofile_limit

    raise_nofile_limit()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        try:
            server = start_server(args.server, backlog=BACKLOG, log_path=Path(tmp) / "server.log")
        except ServerStartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            runs = {
                (n, think): measure(server, n, think, args.window, Path(tmp))
                for think in (IDLE_THINK, ACTIVE_THINK)
                for n in (args.small, args.large)
            }
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            server.stop()
    report(args, runs)
    return 0


def report(args: argparse.Namespace, runs: dict[tuple[int, float], Measure]) -> None:
    print(f"server: {args.server} (backlog {BACKLOG}); Locust chat.py, one process; "
          f"{args.small} and {args.large} connections, {args.window:g} s windows")  # fmt: skip
    print(f"{'run':<30}{'RSS MB':>9}{'CPU %':>8}{'msg/s':>9}{'connect/s':>11}")
    for (n, think), m in runs.items():
        label = f"{n} {'idle' if think == IDLE_THINK else 'active (1 msg/s each)'}"
        print(f"{label:<30}{m.rss_bytes / 1e6:>9.1f}{m.cpu_percent:>8.1f}{m.messages_per_s:>9.0f}{m.connect_rate:>11.0f}")
    idle_mb, idle_cpu = per_thousand(runs[(args.small, IDLE_THINK)], runs[(args.large, IDLE_THINK)])
    act_mb, act_cpu = per_thousand(runs[(args.small, ACTIVE_THINK)], runs[(args.large, ACTIVE_THINK)])
    small_a, large_a = runs[(args.small, ACTIVE_THINK)], runs[(args.large, ACTIVE_THINK)]
    extra_msgs = large_a.messages_per_s - small_a.messages_per_s
    us_per_msg = (large_a.cpu_percent - small_a.cpu_percent) / 100 * 1e6 / extra_msgs if extra_msgs > 0 else float("nan")
    print(f"per 1,000 idle connections:   {idle_mb:6.1f} MB RSS, {idle_cpu:5.2f} % of a core")
    print(f"per 1,000 active connections: {act_mb:6.1f} MB RSS, {act_cpu:5.2f} % of a core "
          f"({us_per_msg:.0f} µs of generator CPU per message)")  # fmt: skip
    # CPU times come in clock ticks (10 ms): a difference under two ticks over the window is not measured
    resolved = 2 * 100 * (1 / os.sysconf("SC_CLK_TCK")) / args.window  # % of a core
    k = (args.large - args.small) / 1000
    if idle_cpu * k >= resolved:
        print(f"active/idle CPU per connection: {act_cpu / idle_cpu:.1f}x")
    else:
        print(f"active/idle CPU per connection: - (idle connections cost less CPU than a {args.window:.0f} s window resolves)")
    big = runs[(args.large, IDLE_THINK)]
    print(f"connect rate: {big.connect_rate:.0f} connections/s ({big.connections} at once, "
          f"{big.connect_s:.2f} s first to last, as the server counted them)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
