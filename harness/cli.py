"""``swarmbench``: sweep server designs across concurrency, report, compare, check.

Exit codes: 0 all well, 1 a ``--check`` broke (or the sweep could not run a
cell), 2 bad usage, 130 interrupted (finished cells are kept and reported).
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.target import parse_host
from harness.locust_run import locust_args_ok
from harness.checks import Check, CheckError, cell_metrics, evaluate, parse_check
from harness.progress import make_progress
from harness.results import ResultError, load_run
from harness.sweep import SweepConfig, resolve_scenario, run_sweep
from server.args import Parser
from server.variants import VARIANTS

DEFAULT_OUT = Path("swarmbench-results")
#: `swarmbench run`: the README's main job, about three and a half minutes on two cores. Each cell
#: ramps until every user has had a reply (at most --establish-timeout: the pool at 500 users never
#: answers most of them and costs that deadline), settles 2 s and measures a 5 s window. An open
#: loop of 10,000 messages/s over all users keeps one Locust process well below a core, so the
#: figures are the servers'; sessions of 1000 messages hold every connection open, so a
#: design's threads meet its connections.
RUN_DEFAULTS: dict[str, object] = {
    "variants": "threaded,pool,selectors,asyncio,prefork",
    "users": "10,100,500",
    "duration": "5s",
    "warmup": "2s",
    "establish_timeout": "10s",
    "rate": "10000",
    "locust_arg": ["--messages-per-session=1000"],
}


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
    p.add_argument("--warmup", type=duration, default=defaults.get("warmup", "5s"), help="settle after every user is established, dropped from each cell's figures (default %(default)s)")
    p.add_argument("--establish-timeout", type=duration, default=defaults.get("establish_timeout", "30s"), help="deadline for every user to connect and get its first reply; the window starts after that or at the deadline (default %(default)s)")
    p.add_argument("--scenario", default="chat", help="scenario file or shipped name (default %(default)s)")
    p.add_argument("--rate", type=positive_number, default=defaults.get("rate"), help="open loop: messages/s over all users (default: %(default)s; None: closed loop)")
    p.add_argument("--workers", type=int, default=0, help="Locust worker processes (--processes); 0: one process")
    p.add_argument("--expect-workers", type=int, default=0, metavar="N", help="run Locust as master and wait for N workers (locust -f SCENARIO --worker --master-host HOST)")
    p.add_argument("--master-bind", default="*:5557", metavar="HOST:PORT", help="with --expect-workers: where the master listens for workers (default %(default)s)")
    p.add_argument("--backlog", type=int, default=6, help="listen() backlog for started servers (default 6, the tutorial's)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG", help="extra argument for every started server (repeatable)")
    p.add_argument("--locust-arg", action="append", default=list(defaults.get("locust_arg", [])), metavar="ARG", help="extra argument for Locust (repeatable), e.g. --locust-arg=--think-time=1")
    p.add_argument("--target", default=None, metavar="HOST:PORT", help="sweep a server you run (loopback only) instead of starting variants")
    p.add_argument("--pid", type=int, default=None, help="with --target: the server's PID, to sample it")
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
    target = None
    variants = args.variants
    if args.target is not None:
        try:
            target = parse_host(args.target)[1]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        probe(target)
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
        server_args=tuple(args.server_arg), locust_args=tuple(args.locust_arg), target=target,
        target_pid=args.pid, expect_workers=args.expect_workers,
        master_bind=(bind_host.strip("[]"), int(bind_port)), argv=tuple(argv),
        establish_timeout=establish_timeout(args),
    )  # fmt: skip


def establish_timeout(args: argparse.Namespace) -> float:
    value = float(getattr(args, "establish_timeout", 30.0))
    if not 0 < value < 3600:
        raise UsageError(f"--establish-timeout must be above 0 s and below 1 h (got {value:g} s)")
    return value


def probe(target: tuple[str, int]) -> None:
    """A target that refuses connections is found within 2 s, before any cell starts."""
    try:
        socket.create_connection(target, timeout=2.0).close()
    except OSError as exc:
        raise UsageError(f"target {target[0]}:{target[1]} does not accept connections: {exc.strerror or exc}") from None


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
