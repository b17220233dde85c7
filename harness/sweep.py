"""A sweep: every variant at every concurrency, one cell at a time, each written at once.

For each variant the server is started on a free port and sampled; for each
user count Locust runs the scenario file; the cell's result (steady window
only) is written as soon as the cell ends. A server that dies ends its
variant, not the sweep; Ctrl-C keeps every finished cell.
"""

from __future__ import annotations

import math
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from harness import histograms, kernel
from harness.locust_run import LocustJob, LocustOutcome, run_locust, spawn_rate
from harness.machine import git_commit, host_info, raise_nofile_limit, versions
from harness.results import (
    CellResult,
    GeneratorStats,
    Latency,
    RunManifest,
    ServerStats,
    TimePoint,
    replace_manifest,
    write_cell,
)
from harness.sampler import Sample, Sampler, summarize
from harness.servers import RunningServer, ServerStartError, start_server

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
#: Beside the cell results: Locust's logs and files, histograms, .hgrm, server logs.
RAW = "raw"


@dataclass(frozen=True)
class SweepConfig:
    out: Path
    variants: tuple[str, ...]
    users: tuple[int, ...]
    duration_s: float
    warmup_s: float
    scenario: Path
    rate: float | None = None
    workers: int = 0
    backlog: int = 6
    server_args: tuple[str, ...] = ()
    locust_args: tuple[str, ...] = ()
    target: tuple[str, int] | None = None
    target_pid: int | None = None
    expect_workers: int = 0
    master_bind: tuple[str, int] = ("*", 5557)
    argv: tuple[str, ...] = ()

    def planned(self) -> list[tuple[str, int]]:
        return [(v, u) for v in self.variants for u in self.users]

    def cell_seconds(self) -> float:
        return self.warmup_s + self.duration_s


class SweepProgress:
    """What the sweep tells its user; the CLI draws it, tests may ignore it."""

    def cell_started(self, variant: str, users: int, index: int, total: int, seconds: float) -> None: ...
    def tick(self, messages_per_s: float | None) -> None: ...
    def cell_done(self, cell: CellResult) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class SweepOutcome:
    manifest: RunManifest
    cells: list[CellResult] = field(default_factory=list)
    interrupted: bool = False


def resolve_scenario(name: str) -> Path:
    """A path to a scenario file, or the name of one shipped in scenarios/ (``chat``)."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    shipped = SCENARIO_DIR / (name if name.endswith(".py") else f"{name}.py")
    if "/" not in name and shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.py") if not p.stem.startswith("_")))
    raise ValueError(f"unknown scenario {name!r}: give a file or one of: {known}")


def run_sweep(cfg: SweepConfig, progress: SweepProgress | None = None) -> SweepOutcome:
    progress = progress or SweepProgress()
    raise_nofile_limit()
    manifest = RunManifest(
        run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}",
        started_at=time.time(),
        argv=cfg.argv,
        options=config_dict(cfg),
        host=host_info(),
        versions=versions(),
        git_commit=git_commit(),
        planned=tuple(cfg.planned()),
    )
    replace_manifest(cfg.out, manifest)
    outcome = SweepOutcome(manifest)
    index = 0
    try:
        for variant in cfg.variants:
            index = run_variant(cfg, variant, index, outcome, progress)
    except KeyboardInterrupt:
        outcome.interrupted = True
    final = "interrupted" if outcome.interrupted else "complete"
    outcome.manifest = replace(manifest, ended_at=time.time(), outcome=final)
    replace_manifest(cfg.out, outcome.manifest)
    return outcome


def run_variant(cfg: SweepConfig, variant: str, index: int, outcome: SweepOutcome, progress: SweepProgress) -> int:
    """Run one variant's cells; return the index of the next cell."""
    server: RunningServer | None = None
    total = len(cfg.planned())
    if cfg.target is None:
        try:
            server = start_server(
                variant, backlog=cfg.backlog, extra_args=cfg.server_args, log_path=cfg.out / RAW / f"server-{variant}.log"
            )
        except ServerStartError as exc:
            progress.note(f"{variant}: {exc}; skipping its cells")
            for users in cfg.users:
                cell = failed_cell(cfg, variant, users, str(exc))
                write_cell(cfg.out, cell)
                outcome.cells.append(cell)
            return index + len(cfg.users)
        host, port, pid = server.host, server.port, server.pid
    else:
        (host, port), pid = cfg.target, cfg.target_pid
    try:
        for users in cfg.users:
            index += 1
            progress.cell_started(variant, users, index, total, cfg.cell_seconds())
            cell = run_cell(cfg, variant, users, host, port, pid, server, progress)
            write_cell(cfg.out, cell)
            outcome.cells.append(cell)
            progress.cell_done(cell)
            if cell.status == "interrupted":
                raise KeyboardInterrupt
            if cell.status == "server-died":
                progress.note(f"{variant}: the server died at {users} users; going on with the next variant")
                index += len(cfg.users) - cfg.users.index(users) - 1
                break
    finally:
        if server is not None:
            server.stop()
    return index


def run_cell(
    cfg: SweepConfig,
    variant: str,
    users: int,
    host: str,
    port: int,
    pid: int | None,
    server: RunningServer | None,
    progress: SweepProgress,
) -> CellResult:
    stem = f"cell-{variant}-u{users:05d}"
    url_host = f"[{host}]" if ":" in host else host
    job = LocustJob(
        scenario=cfg.scenario,
        host_url=f"tcp://{url_host}:{port}",
        users=users,
        spawn_rate=spawn_rate(users, cfg.warmup_s),
        run_time_s=cfg.cell_seconds(),
        hdr_file=cfg.out / RAW / f"{stem}.hdr.json",
        log_file=cfg.out / RAW / f"{stem}.locust.log",
        json_file=cfg.out / RAW / f"{stem}.locust.json",
        workers=cfg.workers,
        rate=cfg.rate,
        extra_args=cfg.locust_args,
        expect_workers=cfg.expect_workers,
        master_bind=cfg.master_bind,
    )
    sampler = Sampler(pid, port).start() if pid is not None and psutil.pid_exists(pid) else None
    before = kernel.read_tcp_counters()
    started = time.time()
    try:
        run = run_locust(job, progress.tick)
    except KeyboardInterrupt:
        run = LocustOutcome(tuple(job.argv()), None, False, True, started, time.time())
    after = kernel.read_tcp_counters()
    samples = sampler.stop() if sampler is not None else []
    died = server_died(server, pid, host, port, samples)
    return assemble_cell(cfg, variant, users, job, run, samples, kernel.counter_deltas(before, after), died, server, pid)


def server_died(server: RunningServer | None, pid: int | None, host: str, port: int, samples: list[Sample]) -> bool:
    if server is not None:
        return not server.alive()
    if pid is not None:
        return not psutil.pid_exists(pid) or bool(samples and not samples[-1].alive)
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError:
        return True
    return False


def assemble_cell(
    cfg: SweepConfig,
    variant: str,
    users: int,
    job: LocustJob,
    run: LocustOutcome,
    samples: list[Sample],
    kernel_deltas: dict[str, int],
    died: bool,
    server: RunningServer | None,
    pid: int | None,
) -> CellResult:
    """Join Locust's histograms, the server samples and the kernel counters of one cell."""
    error = run.error(job.log_file)
    data = None
    if job.hdr_file.exists():
        try:
            data = histograms.load_histogram_file(job.hdr_file)
        except ValueError as exc:
            error = error or f"histogram file unreadable: {exc}"
    elif error is None:
        error = f"Locust wrote no histogram file: {job.log_file.name} says: " + last_line(job.log_file)
    start = float(data["started_at"]) if data else run.started_at
    t0, t1 = steady_window(data, start, cfg)
    if t1 <= t0 and error is None and not run.interrupted:
        error = "no steady window: Locust stopped before the warm-up ended (all users spawned late?)"
    latency: dict[str, Latency] = {}
    failures: dict[str, dict[str, int]] = {}
    timeline: tuple[TimePoint, ...] = ()
    if data:
        for name, hist in histograms.window(data, t0, t1).items():
            latency[name] = Latency.from_dict(histograms.summarize(hist))
        whole = histograms.window(data, 0, math.inf)
        if "connect" in whole:  # ramp-up connect storms fall in the warm-up: keep them too
            latency["connect_all"] = Latency.from_dict(histograms.summarize(whole["connect"]))
        if "unanswered" in whole:  # recorded as the run stops, after the steady window
            latency["unanswered"] = Latency.from_dict(histograms.summarize(whole["unanswered"]))
        failures = histograms.window_failures(data, t0, t1)
        timeline = build_timeline(data, samples, start)
    status = "ok"
    if run.interrupted:
        status = "interrupted"
    elif died:
        status = "server-died"
    elif error is not None:
        status = "failed"
    messages = latency["message"].count if "message" in latency else 0
    stats = summarize(samples, t0, t1) if samples else {}
    exit_code = server.process.returncode if server is not None and died else None
    return CellResult(
        variant=variant,
        users=users,
        scenario=cfg.scenario.stem,
        status=status,
        started_at=start,
        ended_at=run.ended_at,
        warmup_s=cfg.warmup_s,
        duration_s=cfg.duration_s,
        throughput=messages / (t1 - t0) if t1 > t0 else 0.0,
        messages=messages,
        rate=cfg.rate,
        workers=cfg.workers,
        latency=latency,
        failures=failures,
        failures_total={k: dict(v) for k, v in (data or {}).get("failures", {}).items()},
        server=ServerStats.from_dict({**stats, "pid": pid, "died": died, "exit_code": exit_code}),
        kernel=kernel_deltas,
        generator=GeneratorStats.from_dict((data or {}).get("generator", {})),
        timeline=timeline,
        commands=tuple(c for c in (tuple(server.argv) if server else (), run.argv) if c),
        files={
            "histograms": f"{RAW}/{job.hdr_file.name}",
            "locust_log": f"{RAW}/{job.log_file.name}",
            "locust_json": f"{RAW}/{job.json_file.name}",
            **({"server_log": f"{RAW}/{server.log_path.name}"} if server is not None else {}),
        },
        error=error,
        run_id=cfg.out.name,
    )


def steady_window(data: dict | None, start: float, cfg: SweepConfig) -> tuple[int, int]:
    """Whole seconds after the warm-up and after the last user spawned, before Locust began to stop.

    Locust arms ``-t`` before ``test_start``, so the planned end can fall after
    the real stop; a second half-empty or holding the stop would bias the figures.
    """
    data = data or {}
    begin = max(start + cfg.warmup_s, float(data.get("spawned_at") or start))
    end = min(start + cfg.cell_seconds(), float(data.get("stopping_at") or math.inf), float(data.get("ended_at") or math.inf))
    return math.ceil(begin), math.floor(end)


def build_timeline(data: dict, samples: list[Sample], start: float) -> tuple[TimePoint, ...]:
    """One point a second: messages/s and p99 from Locust, threads/CPU/RSS from the sampler."""
    points = []
    seconds = sorted({int(iv["t"]) for iv in data.get("intervals", ())})
    for t in seconds:
        hists = histograms.window(data, t, t + 1)
        message = hists.get("message")
        fails = histograms.window_failures(data, t, t + 1)
        in_second = [s for s in samples if t <= s.t < t + 1 and s.alive]
        last = in_second[-1] if in_second else None
        points.append(
            TimePoint(
                t=round(t - start, 3),
                messages_per_s=float(message.get_total_count()) if message is not None else 0.0,
                p99_us=float(message.get_value_at_percentile(99)) if message is not None and message.get_total_count() else None,
                threads=max(s.threads for s in in_second) if in_second else None,
                cpu_percent=sum(s.cpu_percent for s in in_second) / len(in_second) if in_second else None,
                rss_bytes=last.rss_bytes if last else None,
                connections=last.connections if last else None,
                failures=sum(sum(v.values()) for v in fails.values()),
            )
        )
    return tuple(points)


def failed_cell(cfg: SweepConfig, variant: str, users: int, error: str) -> CellResult:
    now = time.time()
    return CellResult(
        variant, users, cfg.scenario.stem, "failed", now, now, cfg.warmup_s, cfg.duration_s, error=error, run_id=cfg.out.name
    )


def last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "nothing"
    return lines[-1][:300] if lines else "nothing"


def config_dict(cfg: SweepConfig) -> dict[str, object]:
    return {
        "variants": list(cfg.variants),
        "users": list(cfg.users),
        "duration_s": cfg.duration_s,
        "warmup_s": cfg.warmup_s,
        "scenario": str(cfg.scenario),
        "rate": cfg.rate,
        "workers": cfg.workers,
        "backlog": cfg.backlog,
        "server_args": list(cfg.server_args),
        "locust_args": list(cfg.locust_args),
        "target": f"{cfg.target[0]}:{cfg.target[1]}" if cfg.target else None,
        "target_pid": cfg.target_pid,
        "expect_workers": cfg.expect_workers,
        "python": sys.executable,
    }

