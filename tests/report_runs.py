"""A synthetic sweep's result folder, for the report's tests (test_report.py, test_findings.py).

Written with harness.results from CellResult objects whose numbers look like a
real sweep: the threaded design grows a thread per user and overflows its listen
queue at 500 users, asyncio stays flat and its 500-user cell is generator-bound,
the pool's server dies at 500 and its 1000-user cell never ran (a partial run).
Not a conftest: the two test files import it, nothing else sees it.
"""

from __future__ import annotations

from pathlib import Path

from harness.results import CellResult, GeneratorStats, Latency, RunManifest, ServerStats, TimePoint, replace_manifest, write_cell

T0 = 1_700_000_000.0
WARMUP, DURATION = 2.0, 8.0

# variant -> users -> (p50 ms, p99 ms, messages/s, threads max, server CPU %, RSS MiB)
PROFILE: dict[str, dict[int, tuple[float, float, float, int, float, float]]] = {
    "threaded": {1: (0.08, 0.25, 4200, 3, 35, 22), 10: (0.6, 1.8, 9800, 12, 88, 24),
                 100: (4.0, 12.0, 11000, 102, 97, 41), 500: (25.0, 85.0, 9500, 502, 99, 120)},
    "asyncio": {1: (0.07, 0.2, 4600, 1, 30, 18), 10: (0.4, 0.9, 13000, 1, 70, 18),
                100: (1.5, 3.5, 15500, 1, 95, 20), 500: (3.0, 8.0, 15000, 1, 96, 26)},
    "pool": {1: (0.09, 0.3, 4000, 9, 33, 21), 10: (0.7, 2.0, 9000, 9, 80, 21),
             100: (6.0, 15.0, 9600, 9, 90, 22), 500: (30.0, 120.0, 1200, 9, 60, 23)},
}
PLANNED = [(v, u) for v in PROFILE for u in (1, 10, 100, 500)] + [("pool", 1000)]


def lat(p50_ms: float, p99_ms: float, count: int) -> Latency:
    p50, p99 = p50_ms * 1000, p99_ms * 1000
    return Latency(count=count, min_us=p50 * 0.3, max_us=p99 * 4, mean_us=p50 * 1.2, p50_us=p50,
                   p90_us=p50 + (p99 - p50) * 0.5, p95_us=p50 + (p99 - p50) * 0.7, p99_us=p99,
                   p999_us=p99 * 1.6, p9999_us=p99 * 2.5)


def make_cell(variant: str, users: int, n: int, slow: float = 1.0) -> CellResult:
    """Cell number ``n`` of a sweep; ``slow`` multiplies latency and divides throughput."""
    p50, p99, rate, threads, cpu, rss = PROFILE[variant][users]
    p50, p99, rate = p50 * slow, p99 * slow, rate / slow
    status, error, exit_code, died = "ok", None, None, False
    saturated = variant == "asyncio" and users == 500
    kernel = {"TcpExt.ListenOverflows": 0, "TcpExt.ListenDrops": 0, "Tcp.TCPSynRetrans": 0}
    connect = lat(0.05, 0.2, users)
    failures: dict[str, dict[str, int]] = {}
    if variant == "threaded" and users == 500:
        connect = lat(0.15, 1030.0, users)
        kernel = {"TcpExt.ListenOverflows": 412, "TcpExt.ListenDrops": 412, "Tcp.TCPSynRetrans": 380}
        failures = {"message": {"TimeoutError": 40}}
    if variant == "pool" and users == 500:
        status, error, exit_code, died = "server-died", "server exited with code -9 during the cell", -9, True
        failures = {"message": {"ConnectionResetError": 480}}
    start = T0 + n * 12
    seconds = 4 if died else int(WARMUP + DURATION)
    timeline = tuple(
        TimePoint(t=float(t), messages_per_s=rate * (0.5 if t < WARMUP else 1.0) * (1 + 0.03 * (t % 3)),
                  p99_us=p99 * 1000 * (1.3 if t < WARMUP else 1.0), threads=threads, cpu_percent=cpu,
                  rss_bytes=int(rss * 1024 * 1024), connections=users)
        for t in range(seconds))
    return CellResult(
        variant=variant, users=users, scenario="scenarios/chat.py", status=status, started_at=start,
        ended_at=start + WARMUP + DURATION, warmup_s=WARMUP, duration_s=DURATION, throughput=rate,
        messages=int(rate * DURATION), workers=1,
        latency={"message": lat(p50, p99, int(rate * DURATION)), "connect": connect,
                 "session": lat(p50 * 20, p99 * 20, users),
                 **({"loop_lag": lat(0.5, 2.5, 5000)} if saturated else {})},
        failures=failures, failures_total=failures,
        window_s=DURATION, window_from=start + WARMUP, established_at=start + 0.5, users_not_established=0,
        spectrum=tuple((q, v * (p99 * 1000)) for q, v in ((50.0, 0.3), (90.0, 0.6), (99.0, 1.0), (99.9, 1.6), (100.0, 4.0))),
        server=ServerStats(pid=4242, threads_mean=threads, threads_max=threads, cpu_percent_mean=cpu,
                           cpu_percent_max=cpu + 3, rss_bytes_max=int(rss * 1024 * 1024), fds_max=users + 8,
                           connections_mean=users, connections_max=users, samples=seconds, died=died,
                           exit_code=exit_code),
        kernel=kernel,
        generator=GeneratorStats(cpu_percent_max=99.0 if saturated else 45.0, saturated=saturated),
        timeline=timeline,
        commands=(("locust", "-f", "scenarios/chat.py", "--headless", "-u", str(users)),),
        error=error, run_id="run-a",
    )


def write_run(directory: Path, run_id: str = "run-a", slow: dict[str, float] | None = None,
              skip: tuple[tuple[str, int], ...] = ()) -> Path:
    """A partial run: every planned cell but pool@1000 (and ``skip``), manifest outcome 'interrupted'."""
    directory.mkdir(parents=True)
    manifest = RunManifest(run_id=run_id, started_at=T0, argv=("swarmbench", "sweep", "--users", "1,10,100,500"),
                           options={"backlog": 6, "duration": "8s", "warmup": "2s"},
                           host={"hostname": "ci", "cpus": 2}, versions={"python": "3.11.2", "locust": "2.47"},
                           git_commit="ff2e26a", planned=tuple(PLANNED), ended_at=T0 + 200, outcome="interrupted")
    replace_manifest(directory, manifest)
    for n, (variant, users) in enumerate(PLANNED):
        if users in PROFILE[variant] and (variant, users) not in skip:
            write_cell(directory, make_cell(variant, users, n, (slow or {}).get(variant, 1.0)))
    return directory
