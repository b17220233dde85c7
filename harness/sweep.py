"""A sweep: every variant at every concurrency, one cell at a time, each written at once.

For each variant the server is started on a free port and sampled; for each
user count Locust runs the scenario file; the cell's result (steady window
only) is written as soon as the cell ends. A server that dies ends its
variant, not the sweep; Ctrl-C keeps every finished cell.
"""

from __future__ import annotations

import secrets
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from harness import kernel
from harness.cell import RAW, CellPlan, CellRun, assemble_cell, window_hgrm
from harness.locust_run import LocustJob, LocustOutcome, run_locust, spawn_rate
from harness.host import git_commit, host_info, raise_nofile_limit, versions
from harness.machine import MachineSampler
from harness.results import CellResult, ResultError, RunManifest, replace_manifest, write_bytes, write_cell
from harness.results.histogram_file import load_histogram_file
from harness.server_process import RunningServer, ServerStartError, start_server
from harness.server_sampler import Sample, Sampler
from harness.target import Target

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"


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
    establish_timeout: float = 30.0

    def planned(self) -> list[tuple[str, int]]:
        return [(v, u) for v in self.variants for u in self.users]

    def cell_seconds(self) -> float:
        """The planned phases after establishment: the settle (--warmup) and the window."""
        return self.warmup_s + self.duration_s

    def cell_plan(self) -> CellPlan:
        return CellPlan(self.scenario.stem, self.warmup_s, self.duration_s, self.rate, self.workers, self.out.name)


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
        target = Target(server.host, server.port, server.pid, server)
    else:
        target = Target(cfg.target[0], cfg.target[1], cfg.target_pid)
    try:
        for users in cfg.users:
            index += 1
            progress.cell_started(variant, users, index, total, cfg.cell_seconds())
            cell = run_cell(cfg, variant, users, target, progress)
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


def run_cell(cfg: SweepConfig, variant: str, users: int, target: Target, progress: SweepProgress) -> CellResult:
    """Run Locust on one cell while the sampler watches the server; return the cell's result."""
    stem = f"cell-{variant}-u{users:05d}"
    job = LocustJob(
        scenario=cfg.scenario,
        host_url=target.url,
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
        establish_timeout=cfg.establish_timeout,
        settle_s=cfg.warmup_s,
        window_s=cfg.duration_s,
    )
    machine = MachineSampler().start()
    sampler = Sampler(target.pid, target.port).start() if target.pid is not None and psutil.pid_exists(target.pid) else None
    before = kernel.read_tcp_counters()
    started = time.time()
    try:
        outcome = run_locust(job, progress.tick)
    except KeyboardInterrupt:
        outcome = LocustOutcome(tuple(job.argv()), None, False, True, started, time.time())
    after = kernel.read_tcp_counters()
    samples = sampler.stop() if sampler is not None else []
    measured = CellRun(
        variant=variant, users=users, job=job, outcome=outcome, samples=tuple(samples),
        kernel=kernel.counter_deltas(before, after), died=server_died(target, samples),
        machine=tuple(machine.stop()),
    )  # fmt: skip
    cell = assemble_cell(cfg.cell_plan(), target, measured)
    return replace(cell, files={**cell.files, **write_window_hgrm(cfg.out / RAW, stem, job, cell)})


def write_window_hgrm(raw: Path, stem: str, job: LocustJob, cell: CellResult) -> dict[str, str]:
    """The window's ``.hgrm`` per name (``STEM.NAME.hgrm``); Locust's whole-run ones are renamed
    ``STEM.whole-run.NAME.hgrm`` so that no file's name says less than what it covers."""
    if not job.hdr_file.exists():
        return {}
    try:
        data = load_histogram_file(job.hdr_file)
    except ResultError:
        return {}
    files: dict[str, str] = {}
    for whole in raw.glob(f"{job.hdr_file.stem}.*.hgrm"):
        name = whole.name[len(job.hdr_file.stem) + 1 : -len(".hgrm")]
        whole.rename(raw / f"{stem}.whole-run.{name}.hgrm")
    if cell.window_from is None or not cell.window_s:
        return files
    t0 = int(cell.window_from)
    t1 = t0 + int(cell.window_s)
    for name, text in window_hgrm(data, t0, t1).items():
        path = write_bytes(raw / f"{stem}.{name}.hgrm", text)
        files[f"hgrm_{name}"] = f"{RAW}/{path.name}"
    return files


def server_died(target: Target, samples: list[Sample]) -> bool:
    if target.server is not None:
        return not target.server.alive()
    if target.pid is not None:
        return not psutil.pid_exists(target.pid) or bool(samples and not samples[-1].alive)
    try:
        socket.create_connection(target.address, timeout=2.0).close()
    except OSError:
        return True
    return False


def failed_cell(cfg: SweepConfig, variant: str, users: int, error: str) -> CellResult:
    now = time.time()
    return CellResult(
        variant, users, cfg.scenario.stem, "failed", now, now, cfg.warmup_s, cfg.duration_s, error=error, run_id=cfg.out.name
    )


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
        "establish_timeout": cfg.establish_timeout,
        "python": sys.executable,
    }

