"""The harness against redis-benchmark: same redis-server, PING, interleaved, at 1, 10 and 100 connections.

redis-benchmark (C, one epoll loop, ``-P 1``: one request in flight per
connection, as the harness) is the floor a Python generator is compared with.
Each repetition runs redis-benchmark then the harness (scenarios/chat.py
``--protocol redis``, closed loop) for the same duration; the harness's figures
come from its histogram file's whole steady seconds. Printed: msg/s and p50 of
both, and the harness's as ratios of redis-benchmark's (medians).

    python bench/bench_redis.py [--connections 1,10,100] [--duration 5] [--repeat 3]
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness.results.histogram_file import load_histogram_file, summarize  # noqa: E402
from harness.server_process import die_with_parent  # noqa: E402
from open_loop import start_redis  # noqa: E402
from server.args import Parser  # noqa: E402


def redis_benchmark(port: int, conns: int, duration: int) -> tuple[float, float]:
    """(requests/s, p50 ms) of ``redis-benchmark -t ping_mbulk`` for about ``duration`` seconds."""
    probe = _run_benchmark(port, conns, 20_000)
    requests = max(1000, int(probe[0] * duration))
    return _run_benchmark(port, conns, requests)


def _run_benchmark(port: int, conns: int, requests: int) -> tuple[float, float]:
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(conns), "-n", str(requests),
         "-t", "ping_mbulk", "-P", "1", "--csv"],
        capture_output=True, text=True, timeout=300, check=True, preexec_fn=die_with_parent,
    ).stdout  # fmt: skip
    rows = [row for row in csv.DictReader(io.StringIO(out)) if row.get("test", "").startswith("PING")]
    if not rows:
        raise RuntimeError(f"redis-benchmark printed no PING row: {out[-200:]!r}")
    return float(rows[0]["rps"]), float(rows[0]["p50_latency_ms"])


def harness(port: int, conns: int, duration: int, tmp: Path) -> tuple[float, float]:
    """(messages/s, p50 ms) of the Locust user with ``--protocol redis`` over its steady whole seconds."""
    hdr = tmp / f"redis-{conns}.json"
    argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "chat.py"), "--headless",
            "--host", f"127.0.0.1:{port}", "-u", str(conns), "-r", str(conns), "-t", f"{duration + 2}s",
            "--protocol", "redis", "--messages-per-session", str(10**9), "--hdr-file", str(hdr),
            "--only-summary", "--loglevel", "ERROR", "--stop-timeout", "2"]  # fmt: skip
    subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=duration + 60, check=False, preexec_fn=die_with_parent)  # fmt: skip
    data = load_histogram_file(hdr)
    if data.failures:
        raise RuntimeError(f"harness: failures {data.failures}")
    t0, t1 = math.ceil(data.spawned_at or data.started_at) + 1, math.floor(data.stopping_at or data.ended_at)
    if t1 - t0 < 1:
        raise RuntimeError("harness: no whole steady second")
    hist = data.window(t0, t1)["message"]
    return hist.get_total_count() / (t1 - t0), summarize(hist)["p50_us"] / 1000


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__.splitlines()[0])  # one line and exit 2 for a bad argument
    p.add_argument("--connections", default="1,10,100", help="comma-separated counts, 1..1000 (default 1,10,100)")
    p.add_argument("--duration", type=int, default=5, help="seconds per measurement, 2..60 (default 5)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repetitions, 1..20 (default 3)")
    args = p.parse_args(argv)
    try:
        levels = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        p.error(f"--connections: comma-separated integers, not {args.connections!r}")
    if not levels or not all(1 <= c <= 1000 for c in levels) or not 2 <= args.duration <= 60 or not 1 <= args.repeat <= 20:
        p.error("--connections 1..1000 each, --duration 2..60, --repeat 1..20")
    if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
        print("error: redis-server and redis-benchmark are needed (Debian: redis-server, redis-tools)", file=sys.stderr)
        return 1
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = start_redis(port)
    if started is None:
        print("error: redis-server did not start", file=sys.stderr)
        return 1
    proc, _listener = started
    results: dict[int, dict[str, list[tuple[float, float]]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="swarmbench-redis-") as tmp:
            for conns in levels:
                results[conns] = {"redis-benchmark": [], "harness": []}
                for rep in range(args.repeat):
                    for kind in ("redis-benchmark", "harness"):
                        fig = redis_benchmark(port, conns, args.duration) if kind == "redis-benchmark" \
                            else harness(port, conns, args.duration, Path(tmp))
                        results[conns][kind].append(fig)
                        print(f"  {conns:>4} conns, rep {rep + 1}/{args.repeat}, {kind:<15} {fig[0]:>9,.0f} msg/s  "
                              f"p50 {fig[1]:.3f} ms", flush=True)  # fmt: skip
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"error: a measurement failed: {exc}", file=sys.stderr)
        return 1
    finally:
        proc.kill()
        proc.wait()
    print("\nPING against one redis-server; medians of the repetitions")
    print(f"{'conns':>5} {'redis-benchmark msg/s':>22} {'harness msg/s':>22} {'rate ratio':>10} "
          f"{'rb p50 ms':>10} {'harness p50 ms':>15} {'p50 ratio':>10}")  # fmt: skip
    for conns, by_kind in results.items():
        rb, h = by_kind["redis-benchmark"], by_kind["harness"]
        rb_rate, h_rate = statistics.median(f[0] for f in rb), statistics.median(f[0] for f in h)
        rb_p50, h_p50 = statistics.median(f[1] for f in rb), statistics.median(f[1] for f in h)
        print(f"{conns:>5} {rb_rate:>22,.0f} {h_rate:>22,.0f} {h_rate / rb_rate:>9.2f}x "
              f"{rb_p50:>10.3f} {h_p50:>15.3f} {h_p50 / rb_p50 if rb_p50 else math.nan:>9.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
