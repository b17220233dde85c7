"""``swarmbench``: sweep server designs across concurrency, report, compare, check.

Exit codes: 0 all well, 1 a ``--check`` broke (or the sweep could not run a
cell), 2 bad usage, 130 interrupted (finished cells are kept and reported).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from harness.target import split_host
from harness.locust_run import WORKER_WAIT_S, locust_args_ok
from harness.probe import ProbeError, TlsSettings, probe
from harness.checks import Check, CheckError, cell_metrics, evaluate, parse_check
from harness.progress import make_progress
from harness.results import ResultError, load_run
from harness.sweep import SweepConfig, resolve_scenario, run_sweep
from server.args import Parser
from server.variants import VARIANTS

DEFAULT_OUT = Path("swarmbench-results")
#: `swarmbench run`: the README's main job, about two and a half minutes on two cores. An open
#: loop of 10,000 messages/s over all users keeps one Locust process well below a core, so the
#: figures are the servers'; sessions of 1000 messages hold every connection open, so a
#: design's threads meet its connections.
RUN_DEFAULTS: dict[str, object] = {
    "variants": "threaded,pool,selectors,asyncio,prefork",
    "users": "10,100,500",
    "duration": "4s",
    "warmup": "3s",
    "rate": "10000",
    "locust_arg": ["--messages-per-session=1000"],
}


#: Mirrors harness.user.profiles.PROFILES (the lead switches to its keys at merge): the CLI never imports Locust.
PROTOCOLS = ("chat", "line", "redis")


class UsageError(Exception):
    """Bad arguments: one line, exit 2."""


def duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 20s, 1m, 500ms)")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return value


def user_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of user counts: {text!r} (e.g. 1,10,100)") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"user counts must be whole numbers of at least 1: {text!r}")
    return counts


def variant_names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant {', '.join(unknown) or text!r}: choose from {', '.join(sorted(VARIANTS))}")
    return names


def number_in(low: float, high: float, *, low_open: bool, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number in the range (``low_open``: ``low`` itself refused; ``high`` never)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and (low < value if low_open else low <= value) and value < high):
            raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
        return value

    return parse


positive_number = number_in(0.0, math.inf, low_open=True, what="a finite number above 0")
fraction = number_in(0.0, 1.0, low_open=False, what="a fraction in [0, 1) (0.10 = 10%)")


def check_expr(text: str) -> Check:
    try:
        return parse_check(text)
    except CheckError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_sweep_options(p: argparse.ArgumentParser, defaults: dict[str, object]) -> None:
    p.add_argument("--variants", type=variant_names, default=defaults.get("variants", "threaded"), help=f"comma-separated, from: {', '.join(sorted(VARIANTS))} (default %(default)s)")
    p.add_argument("--users", type=user_counts, default=defaults.get("users", "1,10,100"), help="concurrency levels (default %(default)s)")
    p.add_argument("--duration", type=duration, default=defaults.get("duration", "20s"), help="steady window of each cell (default %(default)s)")
    p.add_argument("--warmup", type=duration, default=defaults.get("warmup", "5s"), help="dropped from each cell's figures (default %(default)s)")
    p.add_argument("--scenario", default="chat", help="scenario file or shipped name (default %(default)s)")
    p.add_argument("--rate", type=positive_number, default=defaults.get("rate"), help="open loop: messages/s over all users (default: %(default)s; None: closed loop)")
    p.add_argument("--workers", type=int, default=0, help="Locust worker processes (--processes); 0: one process")
    p.add_argument("--expect-workers", type=int, default=0, metavar="N", help="run Locust as master and wait for N workers (locust -f SCENARIO --worker --master-host HOST)")
    p.add_argument("--master-bind", default="*:5557", metavar="HOST:PORT", help="with --expect-workers: where the master listens for workers (default %(default)s)")
    p.add_argument("--backlog", type=int, default=6, help="listen() backlog for started servers (default 6, the tutorial's)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG", help="extra argument for every started server (repeatable)")
    p.add_argument("--locust-arg", action="append", default=list(defaults.get("locust_arg", [])), metavar="ARG", help="extra argument for Locust (repeatable), e.g. --locust-arg=--think-time=1")
    p.add_argument("--target", default=None, metavar="HOST:PORT", help="sweep a server you run (any address or name, [IPV6]:PORT) instead of starting variants")
    p.add_argument("--pid", type=int, default=None, help="with --target: the server's PID on this machine, to sample it (without it: no server figures)")
    p.add_argument("--worker-wait", type=duration, default=WORKER_WAIT_S, metavar="SECONDS", help="with --expect-workers: each cell's wait for its workers; fewer: the cell fails (default %(default)gs)")
    p.add_argument("--stop-on-failure", action="store_true", help="a failed cell ends the sweep (default: go on with the next cell)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="the target's protocol profile (default chat)")
    p.add_argument("--message", default=None, metavar="TEXT", help="the message the profile sends (redis: a command, e.g. 'GET k')")
    p.add_argument("--quit-message", default=None, metavar="TEXT", help="line: the session's last message (empty: just close)")
    p.add_argument("--tls", action="store_true", help="connect with TLS (probed before any cell)")
    p.add_argument("--tls-ca", type=Path, default=None, metavar="FILE", help="with --tls: the CA certificate(s) to verify the server with")
    p.add_argument("--tls-insecure", action="store_true", help="with --tls: do not verify the server's certificate (warned about)")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {DEFAULT_OUT}/RUN-ID); must be new")
    p.add_argument("--slo-ms", type=positive_number, default=10.0, help="message p99 target for the report's findings (default %(default)s)")
    p.add_argument("--check", type=check_expr, action="append", default=[], metavar="EXPR", help="e.g. 'message.p99<5ms', 'errors==0', 'throughput>=10000'; exit 1 if broken")
    p.add_argument("--quiet", action="store_true", help="one line per cell, no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="swarmbench", description="Load-test concurrent TCP servers with Locust.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="the main job: a short sweep of every variant, then the report")
    add_sweep_options(run, RUN_DEFAULTS)
    sweep = sub.add_parser("sweep", help="sweep variants x concurrency and write results + report")
    add_sweep_options(sweep, {})
    report = sub.add_parser("report", help="build the HTML report of a results folder")
    report.add_argument("results", type=Path)
    report.add_argument("--slo-ms", type=positive_number, default=10.0, help="message p99 target for the findings (default %(default)s)")
    report.add_argument("--out", type=Path, default=None, help="report file (*.html) or folder (default RESULTS/report.html)")
    compare = sub.add_parser("compare", help="compare two results folders cell by cell (B against A)")
    compare.add_argument("before", type=Path)
    compare.add_argument("after", type=Path)
    compare.add_argument("--threshold", type=fraction, default=0.10, help="flag changes worse than this fraction (default %(default)s)")
    compare.add_argument("--out", type=Path, default=None, help="comparison report file (*.html) or folder (default AFTER/compare.html)")
    compare.add_argument("--check", type=check_expr, action="append", default=[], metavar="EXPR", help="on the after run's cells, or ratio.METRIC (after/before)")
    worker = sub.add_parser("worker", help="a Locust worker for every cell of a sweep run elsewhere (sweep --expect-workers)")
    worker.add_argument("--master", required=True, metavar="HOST:PORT", help="the sweep's --master-bind address (port default 5557)")
    worker.add_argument("--scenario", default="chat", help="the sweep's scenario file or shipped name (default %(default)s)")
    worker.add_argument("--processes", type=int, default=0, metavar="N", help="Locust worker processes on this machine (default: one)")
    worker.add_argument("--master-timeout", type=duration, default=120.0, metavar="SECONDS", help="exit when no master started a cell for this long (default %(default)gs)")
    return parser


def sweep_config(args: argparse.Namespace, argv: Sequence[str]) -> SweepConfig:
    try:
        scenario = resolve_scenario(args.scenario)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.duration < 1 or args.duration != int(args.duration) or args.warmup != int(args.warmup):
        raise UsageError("--duration and --warmup are whole seconds (Locust's -t is), --duration at least 1s")
    if args.workers < 0 or args.backlog < 1 or args.expect_workers < 0:
        raise UsageError("--workers and --expect-workers must be 0 or more and --backlog at least 1")
    if args.workers and args.expect_workers:
        raise UsageError("--workers (local processes) and --expect-workers (a master) do not go together")
    bind_host, _, bind_port = args.master_bind.rpartition(":")
    if not bind_host or not bind_port.isdigit() or not 0 < int(bind_port) < 65536:
        raise UsageError(f"--master-bind {args.master_bind!r}: expected HOST:PORT, e.g. *:5557")
    try:
        locust_args_ok(args.locust_arg)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.worker_wait < 1:
        raise UsageError("--worker-wait must be at least 1s")
    forwarded = protocol_args(args)
    target = None
    variants = args.variants
    if args.target is not None:
        try:
            target = split_host(args.target)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.pid is not None and not psutil.pid_exists(args.pid):
            raise UsageError(f"--pid {args.pid}: no such process on this machine (server sampling is local)")
        try:
            probe(*target, tls=TlsSettings(args.tls_ca, args.tls_insecure) if args.tls else None)
        except ProbeError as exc:
            raise UsageError(str(exc)) from None
        variants = ("target",)
    elif args.pid is not None:
        raise UsageError("--pid goes with --target")
    out = args.out or DEFAULT_OUT / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty: results are never overwritten; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    return SweepConfig(
        out=out, variants=variants, users=args.users, duration_s=args.duration, warmup_s=args.warmup,
        scenario=scenario, rate=args.rate, workers=args.workers, backlog=args.backlog,
        server_args=tuple(args.server_arg), locust_args=(*args.locust_arg, *forwarded), target=target,
        target_pid=args.pid, expect_workers=args.expect_workers,
        master_bind=(bind_host.strip("[]"), int(bind_port)), argv=tuple(argv),
        worker_wait_s=args.worker_wait, stop_on_failure=args.stop_on_failure,
    )  # fmt: skip


def protocol_args(args: argparse.Namespace) -> list[str]:
    """The profile and TLS options, checked, as Locust arguments (only those given: chat needs none)."""
    if (args.tls_ca is not None or args.tls_insecure) and not args.tls:
        raise UsageError("--tls-ca and --tls-insecure go with --tls")
    if args.tls_ca is not None and args.tls_insecure:
        raise UsageError("--tls-ca verifies the server and --tls-insecure does not: choose one")
    if args.tls_ca is not None and not args.tls_ca.is_file():
        raise UsageError(f"--tls-ca {args.tls_ca}: no such file")
    if args.message is not None:
        check_message(args.protocol or "chat", args.message)
    out = [f"--protocol={args.protocol}"] if args.protocol is not None else []
    out += [f"--message={args.message}"] if args.message is not None else []
    out += [f"--quit-message={args.quit_message}"] if args.quit_message is not None else []
    out += ["--tls"] if args.tls else []
    out += [f"--tls-ca={args.tls_ca.resolve()}"] if args.tls_ca is not None else []
    if args.tls_insecure:
        print("swarmbench: warning: --tls-insecure: the server's certificate is not verified", file=sys.stderr)
        out.append("--tls-insecure")
    return out


def check_message(protocol: str, message: str) -> None:
    """A --message the profile cannot encode is refused before any cell.

    MERGE HOOK: once harness.user.profiles lands, replace these stand-in rules with
    ``PROFILES[protocol].encode(message)`` (its ValueError -> UsageError).
    """
    try:
        data = message.encode()
    except UnicodeEncodeError:
        raise UsageError(f"--message {message!r}: not valid text") from None
    if not data.strip():
        raise UsageError(f"--message {message!r}: empty")
    if protocol == "line" and (b"\n" in data or b"\r" in data):
        raise UsageError(f"--message {message!r}: a line message cannot hold a line break")


def cmd_sweep(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from reports import build_report  # matplotlib loads only when a report is made

    cfg = sweep_config(args, argv)
    with make_progress(cfg, quiet=args.quiet) as progress:
        outcome = run_sweep(cfg, progress)
    report = build_report(cfg.out, slo_ms=args.slo_ms)
    print(f"results: {cfg.out}")
    print(f"report:  {report}")
    if outcome.interrupted:
        print("interrupted: the finished cells are kept and reported", file=sys.stderr)
        return 130
    broken = evaluate(args.check, [(f"{c.variant} u={c.users}", cell_metrics(c)) for c in outcome.cells])
    failed = [c for c in outcome.cells if c.status == "failed"]
    for line in broken:
        print(line, file=sys.stderr)
    for cell in failed:
        print(f"cell {cell.variant} u={cell.users} failed: {cell.error}", file=sys.stderr)
    for cell in outcome.cells:
        if cell.status == "server-died":
            print(f"cell {cell.variant} u={cell.users}: the server died (exit code {cell.server.exit_code})", file=sys.stderr)
    return 1 if broken or failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports import build_report

    report = build_report(args.results, out=args.out, slo_ms=args.slo_ms)
    print(f"report: {report}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from reports import build_comparison_report, compare_runs, render_comparison_text

    comparison = compare_runs(args.before, args.after, threshold=args.threshold)
    print(render_comparison_text(comparison))
    out = build_comparison_report(comparison, args.out or args.after / "compare.html")
    print(f"report: {out}")
    _, after_cells = load_run(args.after)
    ratios = comparison_ratios(comparison)
    rows = [(f"{c.variant} u={c.users}", {**cell_metrics(c), **ratios.get(c.key, {})}) for c in after_cells]
    broken = evaluate(args.check, rows)
    for line in broken:
        print(line, file=sys.stderr)
    return 1 if broken else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from harness.worker import WorkerConfig, master_address, run_worker

    try:
        scenario = resolve_scenario(args.scenario)
        master = master_address(args.master)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.processes < 0 or args.master_timeout < 1:
        raise UsageError("--processes must be 0 or more and --master-timeout at least 1s")
    return run_worker(WorkerConfig(scenario, master, args.processes, args.master_timeout))


def comparison_ratios(comparison: Any) -> dict[tuple[str, int], dict[str, float]]:
    """``ratio.throughput``, ``ratio.message.p99`` ... (after/before) for every paired cell, for --check."""
    names = {"throughput": "ratio.throughput", "p50": "ratio.message.p50", "p99": "ratio.message.p99", "p999": "ratio.message.p99.9"}
    out: dict[tuple[str, int], dict[str, float]] = {}
    for pair in comparison.pairs:
        out[pair.key] = {names[m]: r for m, r in pair.ratios if r is not None and m in names}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (2) or --help (0): a return code, as main's contract says
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command in ("run", "sweep"):
            return cmd_sweep(args, argv)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "worker":
            return cmd_worker(args)
        return cmd_compare(args)
    except (UsageError, ResultError) as exc:
        print(f"swarmbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"swarmbench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("swarmbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
