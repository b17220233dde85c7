"""``swarmbench capacity``: for each design and level, the highest load that holds the SLO.

The search (:mod:`harness.capacity`) decides the loads; each trial is an ordinary sweep cell
(:func:`harness.sweep.run_cell`: establish, settle, window, the same server start, sampler and
assembly) at that load, so a trial and a sweep cell at the same load are the same run. Each trial's
cell file is written as soon as it ends (``cell-VARIANT-uUSERS-rRATE-tN.json``, N counting repeats
of one load), then judged (:func:`harness.verdict.judge`); ``capacity.json`` is rewritten after each
design and level. Ctrl-C, SIGTERM and SIGHUP stop the running trial and keep every finished one:
``capacity.json`` then says what is known ("holds ≥ X", not confirmed).

Axes: ``rate`` (default) searches msg/s over all users at each ``--users`` level; ``users``
searches the user count, each user at ``--rate-per-user``, up to the file-descriptor limit.
The time budget (``--budget``) is per design and level: each search gets its own.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import psutil

from harness.arguments import UsageError, duration, fraction, positive_number
from harness.capacity import DEFAULT_CONFIRM, DEFAULT_RESOLUTION, Budget, Bracket, CapacitySearch
from harness.checks import Check, evaluate
from harness.host import nofile_reachable, raise_nofile_limit
from harness.progress import cell_line
from harness.results import CellResult, ResultError, replace_manifest, write_cell
from harness.results.capacity import Axis, Capacity, CapacityEntry, CapacityResults, Trial, write_capacity
from harness.server_process import RunningServer, ServerStartError, start_server
from harness.stop import StopOnSignal, exit_code, stop_signals_as_ctrl_c
from harness.sweep import RAW, SweepConfig, SweepProgress, new_manifest, probe_started, run_cell
from harness.target import Target
from harness.verdict import judge
from server.args import whole_number

#: Cells of a search are short (many run): the main job's phases, not the sweep's 5 s + 20 s. Sessions
#: of 1000 messages, as the main job's: a session that ends reconnects, and the slots its schedule
#: skips meanwhile would count against the achieved rate at every load (2-3% with the scenario's 10,
#: which alone failed the 99% rule). A --locust-arg of your own comes after this one and wins.
DEFAULTS: dict[str, object] = {"users": None, "duration": "5s", "warmup": "2s", "establish_timeout": "10s",
                               "locust_arg": ["--messages-per-session=1000"]}
#: The rate axis' level when ``--users`` is not given.
DEFAULT_LEVELS = (100,)
#: Where the bracket starts: msg/s over all users (rate axis) or users (users axis).
DEFAULT_START: dict[str, int] = {"rate": 1000, "users": 10}
#: Seconds of trials per design and level: about 20 short trials, enough to bracket from the start
#: across three orders of magnitude, bisect to 10% and confirm.
DEFAULT_BUDGET_S = 240.0
#: Descriptors a process needs besides its users' sockets (modules, logs, pipes, epoll, the master link).
FD_HEADROOM = 128


def add_capacity_options(p: argparse.ArgumentParser) -> None:
    """The search's own options; the cells' options are the sweep's (``harness.cli.add_sweep_options``)."""
    p.add_argument("--axis", choices=("rate", "users"), default="rate", help="rate: the most msg/s over --users users; users: the most users, each at --rate-per-user (default %(default)s)")
    p.add_argument("--rate-per-user", type=positive_number, default=None, metavar="R", help="with --axis users: each user's messages/s")
    p.add_argument("--start", type=whole_number(1, 10**9), default=None, metavar="LOAD", help=f"the first load tried: msg/s (rate axis, default {DEFAULT_START['rate']:,}) or users (default {DEFAULT_START['users']})")
    p.add_argument("--resolution", type=positive_number, default=DEFAULT_RESOLUTION, help="stop bisecting once fails/holds is within 1 + this (default %(default)s: 10%%)")
    p.add_argument("--confirm", type=whole_number(0, 100), default=DEFAULT_CONFIRM, metavar="N", help="repeat the highest passing load N times: it must pass every time (default %(default)s)")
    p.add_argument("--budget", type=duration, default=DEFAULT_BUDGET_S, metavar="SECONDS", help="time for the trials of each design and level; a trial starts only if the longest so far still fits (default %(default)gs)")
    p.add_argument("--max-error-ratio", type=fraction, default=0.0, metavar="RATIO", help="errors allowed in a trial's window, as a share of requests (default %(default)g)")


@dataclass(frozen=True, slots=True)
class CapacityAsk:
    """What the user asked of the search, checked."""

    axis: Axis
    levels: tuple[int, ...]  # rate axis: the user counts searched; users axis: ()
    rate_per_user: float | None
    start: int
    resolution: float
    confirm: int
    budget_s: float
    max_error_ratio: float
    slo_ms: float
    max_users: int  # the descriptor limit, less what a process needs besides its sockets

    @property
    def unit(self) -> str:
        return "msg/s" if self.axis == "rate" else "users"

    def to_dict(self) -> dict[str, object]:
        return {"axis": self.axis, "levels": list(self.levels), "rate_per_user": self.rate_per_user, "start": self.start,
                "resolution": self.resolution, "confirm": self.confirm, "budget_s": self.budget_s,
                "max_error_ratio": self.max_error_ratio, "slo_ms": self.slo_ms, "max_users": self.max_users}


def capacity_ask(args: argparse.Namespace) -> CapacityAsk:
    """The search's arguments checked before any work (one-line UsageError); sets ``args.users`` for the sweep's checks."""
    max_users = nofile_reachable() - FD_HEADROOM
    if args.rate is not None:
        raise UsageError("--rate: a capacity search sets each trial's rate itself (--axis rate) or from "
                         "--rate-per-user (--axis users)")
    if not (math.isfinite(args.budget) and args.budget >= 1):
        raise UsageError(f"--budget must be at least 1 s (whole seconds of trials per design and level), not {args.budget:g} s")
    if args.axis == "users":
        if args.rate_per_user is None:
            raise UsageError("--axis users needs --rate-per-user R (each user's messages/s)")
        if args.users is not None:
            raise UsageError("--axis users searches the user count: give --start, not --users")
        levels: tuple[int, ...] = ()
    else:
        if args.rate_per_user is not None:
            raise UsageError("--rate-per-user goes with --axis users (the rate axis spreads the rate over --users)")
        levels = args.users or DEFAULT_LEVELS
        if max(levels) > max_users:
            raise UsageError(f"--users {max(levels):,} is above the file-descriptor limit ({max_users:,} users: "
                             f"RLIMIT_NOFILE less {FD_HEADROOM} for the process itself)")
    start = args.start if args.start is not None else DEFAULT_START[args.axis]
    if args.axis == "users" and start > max_users:
        raise UsageError(f"--start {start:,} users is above the file-descriptor limit ({max_users:,} users: "
                         f"RLIMIT_NOFILE less {FD_HEADROOM} for the process itself)")
    args.users = levels or (start,)
    return CapacityAsk(args.axis, levels, args.rate_per_user, start, args.resolution, args.confirm, args.budget,
                       args.max_error_ratio, args.slo_ms, max_users)


def trial_stem(variant: str, users: int, rate: float, repeat: int) -> str:
    """``cell-VARIANT-uUSERS-rRATE-tN``: the load and its repeat in the name, so no two trials share a file."""
    rate_text = f"{rate:.3f}".rstrip("0").rstrip(".")
    return f"cell-{variant}-u{users:05d}-r{rate_text}-t{repeat}"


class TrialServer:
    """The server trials run against: a started variant (started again if a trial killed it), or ``--target``."""

    def __init__(self, cfg: SweepConfig, variant: str, progress: SweepProgress) -> None:
        self.cfg, self.variant, self.progress = cfg, variant, progress
        self.server: RunningServer | None = None
        self.starts = 0

    def ready(self) -> Target:
        """A target that is up now; raises ServerStartError (a started variant) or TargetDied (``--target``)."""
        cfg = self.cfg
        if cfg.target is not None:
            if cfg.target_pid is not None and not psutil.pid_exists(cfg.target_pid):
                raise TargetDied(f"the --target server (pid {cfg.target_pid}) is gone")
            return Target(cfg.target[0], cfg.target[1], cfg.target_pid)
        if self.server is None or not self.server.alive():
            if self.server is not None:
                self.progress.note(f"{self.variant}: the server died; starting it again for the next trial")
                self.server.stop()
            self.starts += 1
            log = cfg.out / RAW / f"server-{self.variant}{'' if self.starts == 1 else f'-{self.starts}'}.log"
            self.server = start_server(self.variant, backlog=cfg.backlog, extra_args=cfg.server_args, log_path=log)
            probe_started(self.server, cfg.tls)
        return Target(self.server.host, self.server.port, self.server.pid, self.server)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class TargetDied(Exception):
    """The ``--target`` server is gone: no later trial could say anything, and it is not ours to start again."""


@dataclass
class CapacityOutcome:
    results: CapacityResults
    interrupted: bool = False
    write_error: str | None = None
    problems: list[str] = field(default_factory=list)  # one line each: a server that would not start, a target gone


class TrialLines(SweepProgress):
    """Plain lines, for a terminal and CI logs alike: each cell as the sweep prints it (unless quiet), notes on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def cell_done(self, cell: CellResult) -> None:
        if not self.quiet:
            print(cell_line(cell), flush=True)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class CapacityRun:
    """Every design at every level, one search each, trial by trial."""

    def __init__(self, cfg: SweepConfig, ask: CapacityAsk, progress: SweepProgress, quiet: bool = False) -> None:
        self.cfg, self.ask, self.progress, self.quiet = cfg, ask, progress, quiet
        self.index = 0

    def run(self) -> CapacityOutcome:
        cfg, ask = self.cfg, self.ask
        soft = raise_nofile_limit()
        ask = self.ask = replace(ask, max_users=max(ask.start, min(ask.max_users, soft - FD_HEADROOM)))
        manifest = new_manifest(cfg, (), capacity=ask.to_dict())
        results = CapacityResults(ask.axis, ask.slo_ms, ask.resolution, ask.confirm, ask.max_error_ratio, manifest.run_id)
        outcome = CapacityOutcome(results)
        try:
            write_capacity(cfg.out, results)
            for variant in cfg.variants:
                server = TrialServer(cfg, variant, self.progress)
                try:
                    for level in ask.levels or (None,):
                        self.search(variant, level, server, outcome)
                except ServerStartError as exc:
                    outcome.problems.append(f"{variant}: {exc}; its searches did not run")
                finally:
                    server.stop()
        except KeyboardInterrupt:
            outcome.interrupted = True
        except TargetDied:
            outcome.problems.append("the --target server is gone: the searches after it did not run")
        except ResultError as exc:
            outcome.write_error = str(exc)
        final = "failed" if outcome.write_error else "interrupted" if outcome.interrupted else "complete"
        try:
            replace_manifest(cfg.out, replace(manifest, ended_at=time.time(), outcome=final))
        except ResultError as exc:
            outcome.write_error = outcome.write_error or str(exc)
        return outcome

    def search(self, variant: str, level: int | None, server: TrialServer, outcome: CapacityOutcome) -> None:
        """One search (a design at one level); its entry is added to capacity.json whatever stops it."""
        ask = self.ask
        label = f"{variant} u={level}" if level is not None else f"{variant} at {ask.rate_per_user:g} msg/s per user"
        search = CapacitySearch(ask.start, resolution=ask.resolution, confirm=ask.confirm,
                                max_load=ask.max_users if ask.axis == "users" else None, unit=ask.unit)
        repeats: dict[tuple[int, float], int] = {}
        cells: list[CellResult] = []

        def trial(load: int) -> Trial:
            users, rate = (level, float(load)) if level is not None else (load, load * (ask.rate_per_user or 0.0))
            repeats[(users, rate)] = repeat = repeats.get((users, rate), 0) + 1
            stem = trial_stem(variant, users, rate, repeat)
            target = server.ready()
            self.index += 1
            self.progress.cell_started(variant, users, self.index, 0, self.cfg.cell_seconds())
            if not self.quiet:
                print(f"{label}: trying {load:,} {ask.unit} ({users:,} users at {rate:,.6g} msg/s; "
                      f"{stem}.json)", flush=True)
            cell = run_cell(replace(self.cfg, rate=rate), variant, users, target, self.progress, stem=stem, last_cell=False)
            path = write_cell(self.cfg.out, cell, stem)
            cells.append(cell)
            self.progress.cell_done(cell)
            if cell.status == "interrupted":
                raise KeyboardInterrupt
            verdict = judge(cell, load=load, slo_ms=ask.slo_ms, max_error_ratio=ask.max_error_ratio, cell_file=path.name)
            if cell.status == "failed" and verdict.verdict == "invalid":  # Locust could not run it: the sweep's exit 1
                outcome.problems.append(f"{label}: the trial at {load:,} {ask.unit} could not run: {cell.error}")
            return verdict

        def on_trial(done: Trial, bracket: Bracket) -> None:
            print(trial_line(label, done, bracket, cells[-1], ask.unit), flush=True)

        stopped: BaseException | None = None
        try:
            capacity = search.run(trial, Budget(seconds=ask.budget_s), on_trial)
        except (KeyboardInterrupt, TargetDied, ServerStartError, ResultError) as exc:
            stopped = exc
            capacity = stopped_result(search, exc, ask.unit)
        if capacity.trials:
            entry = CapacityEntry(variant, capacity, users=level, rate_per_user=ask.rate_per_user if level is None else None)
            outcome.results = replace(outcome.results, entries=(*outcome.results.entries, entry))
            print(f"{label}: {result_words(capacity, ask.unit)}", flush=True)
        write_capacity(self.cfg.out, outcome.results)
        if stopped is not None:
            raise stopped


def stopped_result(search: CapacitySearch, exc: BaseException, unit: str) -> Capacity:
    """What the trials so far say when something other than the search ended it."""
    if isinstance(exc, KeyboardInterrupt):
        return search.result(stopped="interrupted")
    if isinstance(exc, TargetDied) and search.fails is not None:  # the death was a trial's failure: the server's limit
        known = search.result(stopped="the server died")
        return replace(known, limited_by="server", reason=f"the server died and was not started again (--target): {search.bracket}")
    return search.result(stopped=f"stopped: {' '.join(str(exc).split()) or type(exc).__name__}")


def trial_line(label: str, trial: Trial, bracket: Bracket, cell: CellResult, unit: str) -> str:
    """The progress line of one trial: its load, verdict and reason, what the server did, and the bracket so far."""
    server = []
    if cell.server.cpu_percent_mean is not None and cell.server.samples:
        server.append(f"server CPU {cell.server.cpu_percent_mean:.0f}%")
    if cell.server.threads_max is not None and cell.server.samples:
        server.append(f"{cell.server.threads_max:,} thread{'' if cell.server.threads_max == 1 else 's'}")
    extra = f" [{', '.join(server)}]" if server else ""
    return f"{label}: {trial.load:,} {unit} {trial.verdict.upper()}: {trial.reason}{extra} | {bracket}"


def result_words(capacity: Capacity, unit: str) -> str:
    """The search's answer in one line: "holds ≥ X" where it is only a lower bound."""
    holds = "-" if capacity.holds is None else f"{'≥ ' if capacity.lower_bound else ''}{capacity.holds:,} {unit}"
    fails = "-" if capacity.fails is None else f"{capacity.fails:,} {unit}"
    confirmed = "" if capacity.holds is None or capacity.confirmed else " (not confirmed)"
    return f"holds {holds}{confirmed}, fails {fails}; limited by {capacity.limited_by}: {capacity.reason}"


def capacity_metrics(entry: CapacityEntry) -> dict[str, float | None]:
    """An entry's figures under the names ``--check`` uses (``capacity.holds>=1000``)."""
    c = entry.capacity
    return {"capacity.holds": None if c.holds is None else float(c.holds),
            "capacity.fails": None if c.fails is None else float(c.fails),
            "capacity.confirmed": float(c.confirmed), "capacity.trials": float(len(c.trials))}


def run_capacity(cfg: SweepConfig, ask: CapacityAsk, checks: Sequence[Check], quiet: bool = False) -> int:
    """Run every search; exit 0, 1 (a check broke, a trial could not run, a write failed) or 128 + a stop signal."""
    received: list[int] = []
    with stop_signals_as_ctrl_c(received):
        outcome = CapacityRun(cfg, ask, StopOnSignal(TrialLines(quiet), received), quiet).run()
    print(f"results:  {cfg.out}")
    print(f"capacity: {cfg.out / 'capacity.json'}")
    if outcome.write_error is not None:
        print(f"swarmbench: error: the search stopped: {outcome.write_error}", file=sys.stderr)
        return 1
    if outcome.interrupted or received:
        print("interrupted: the finished trials are kept, capacity.json says what is known", file=sys.stderr)
        return exit_code(received)
    entries = outcome.results.entries
    broken = evaluate(checks, [(f"{e.variant} u={e.users}" if e.users else f"{e.variant} r/user={e.rate_per_user:g}",
                                capacity_metrics(e)) for e in entries])
    for line in [*broken, *outcome.problems]:
        print(line, file=sys.stderr)
    return 1 if broken or outcome.problems else 0
