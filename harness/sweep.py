"""A sweep: every variant at every concurrency, one cell at a time, each written at once.

For each variant the server is started on a free port and sampled; for each
user count Locust runs the scenario file; the cell's result (steady window
only) is written as soon as the cell ends. A server that dies ends its
variant, not the sweep; Ctrl-C keeps every finished cell.
"""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from harness import kernel
from harness.assemble import RAW, CellPlan, CellRun, assemble_cell, log_size, window_hgrm
from harness.locust_run import WORKER_WAIT_S, LocustJob, LocustOutcome, free_local_port, run_locust, spawn_rate
from harness.host import git_commit, host_info, raise_nofile_limit, versions
from harness.machine import MachineSampler
from harness.probe import ProbeError, TlsSettings, probe
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
    master_bind: tuple[str, int] = ("127.0.0.1", 5557)
    argv: tuple[str, ...] = ()
    #: With expect_workers: how long each cell's master waits for them (``--worker-wait``).
    worker_wait_s: float = WORKER_WAIT_S
    #: ``--stop-on-failure``: a failed cell ends the sweep (its manifest outcome: "failed").
    stop_on_failure: bool = False
    establish_timeout: float = 30.0
    #: ``--tls``: every started variant is probed with a handshake before its cells, as a --target is.
    tls: TlsSettings | None = None

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


class StopSweep(Exception):
    """A cell failed and the user chose ``--stop-on-failure``."""


@dataclass
class SweepOutcome:
    manifest: RunManifest
    cells: list[CellResult] = field(default_factory=list)
    interrupted: bool = False
    #: A result file could not be written (disk full, read-only): the sweep stopped there.
    write_error: str | None = None
    #: ``--stop-on-failure`` ended the sweep at a failed cell.
    stopped_on_failure: bool = False


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


def new_manifest(cfg: SweepConfig, planned: tuple[tuple[str, int], ...], **options: object) -> RunManifest:
    """The run's manifest as it starts (a sweep's, or a capacity search's with its own ``options``), written at once."""
    manifest = RunManifest(
        run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}",
        started_at=time.time(),
        argv=cfg.argv,
        options={**config_dict(cfg), **options},
        host=host_info(),
        versions=versions(),
        git_commit=git_commit(),
        planned=planned,
    )
    replace_manifest(cfg.out, manifest)
    return manifest


def run_sweep(cfg: SweepConfig, progress: SweepProgress | None = None) -> SweepOutcome:
    progress = progress or SweepProgress()
    raise_nofile_limit()
    manifest = new_manifest(cfg, tuple(cfg.planned()))
    outcome = SweepOutcome(manifest)
    index = 0
    try:
        for variant in cfg.variants:
            index = run_variant(cfg, variant, index, outcome, progress)
    except KeyboardInterrupt:
        outcome.interrupted = True
    except ResultError as exc:  # the cells written so far stay; the rest cannot be kept anyway
        outcome.write_error = str(exc)
    except StopSweep:
        outcome.stopped_on_failure = True
    final = (
        "failed" if outcome.write_error or outcome.stopped_on_failure
        else "interrupted" if outcome.interrupted else "complete"
    )  # fmt: skip
    outcome.manifest = replace(manifest, ended_at=time.time(), outcome=final)
    try:
        replace_manifest(cfg.out, outcome.manifest)
    except ResultError as exc:  # the outcome is recorded when it can be
        outcome.write_error = outcome.write_error or str(exc)
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
            probe_started(server, cfg.tls)
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
            if cell.status == "failed" and cfg.stop_on_failure:
                progress.note(f"{variant} at {users} users failed; stopping the sweep (--stop-on-failure)")
                raise StopSweep
            if cell.status == "server-died":
                progress.note(f"{variant}: the server died at {users} users; going on with the next variant")
                index += len(cfg.users) - cfg.users.index(users) - 1
                break
    finally:
        if server is not None:
            server.stop()
    return index


def probe_started(server: RunningServer, tls: TlsSettings | None) -> None:
    """With TLS, a started variant must complete a handshake as a --target must, or its cells never run.

    Without it, a server that does not speak TLS (or whose certificate the client rejects) gives
    cells of 0 msg/s and no errors; with it, one line says why. The server is stopped on failure.
    """
    if tls is None:
        return
    try:
        probe(server.host, server.port, tls=tls)
    except ProbeError as exc:
        server.stop()
        raise ServerStartError(str(exc)) from None


def run_cell(cfg: SweepConfig, variant: str, users: int, target: Target, progress: SweepProgress, *,
             stem: str | None = None, last_cell: bool | None = None) -> CellResult:
    """Run Locust on one cell while the sampler watches the server; return the cell's result.

    ``stem`` names the cell's raw files (default ``cell-VARIANT-uUSERS``: a capacity search runs
    several cells at one user count); ``last_cell``: whether it ends the run (default: the plan's last).
    """
    stem = stem or f"cell-{variant}-u{users:05d}"
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
        # --workers: a master on loopback, on a port free now, so two sweeps never share one
        master_bind=cfg.master_bind if cfg.expect_workers or not cfg.workers else ("127.0.0.1", free_local_port()),
        worker_wait_s=cfg.worker_wait_s,
        last_cell=(variant, users) == cfg.planned()[-1] if last_cell is None else last_cell,
        establish_timeout=cfg.establish_timeout,
        settle_s=cfg.warmup_s,
        window_s=cfg.duration_s,
        server_pid=target.pid if target.pid is not None and psutil.pid_exists(target.pid) else None,
    )
    log_offset = log_size(target.server.log_path if target.server is not None else None)
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
        kernel=kernel.counter_deltas(before, after), died=server_died(target, samples), log_offset=log_offset,
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
    try:  # as the probe connects: a zone (fe80::1%eth0) is a scope id the C library would not read itself
        probe(target.host, target.port, timeout=2.0)
    except ProbeError:
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
        "worker_wait_s": cfg.worker_wait_s,
        "stop_on_failure": cfg.stop_on_failure,
        "establish_timeout": cfg.establish_timeout,
        "python": sys.executable,
    }

