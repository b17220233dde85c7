"""``swarmbench``: sweep server designs across concurrency, search each one's capacity, report, compare, check.

Exit codes: 0 all well, 1 a ``--check`` broke (or the sweep could not run a
cell, or could not write a result or the report), 2 bad usage, 130 interrupted by Ctrl-C and
128 + N by SIGTERM or SIGHUP (finished cells are kept and reported).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.arguments import (
    UsageError,
    arguments_fit,
    check_expr,
    duration,
    file_problem,
    fraction,
    live_pid,
    locust_args_ok,
    make_out_dir,
    master_bind,
    out_name_ok,
    positive_number,
    quit_message_ok,
    server_args_ok,
    started_tls_ok,
    user_counts,
    variant_names,
)
from harness.locust_run import WORKER_WAIT_S
from harness.probe import ProbeError, TlsSettings, probe
from harness.profiles import PROFILES
from harness.target import split_host
from harness.capacity_run import DEFAULTS as CAPACITY_DEFAULTS
from harness.capacity_run import add_capacity_options, capacity_ask, run_capacity
from harness.checks import cell_metrics, evaluate
from harness.progress import make_progress
from harness.results import ResultError, load_run
from harness.results.capacity import CAPACITY_DIR
from harness.stop import StopOnSignal, exit_code, stop_signals_as_ctrl_c
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
    "duration": "3s",
    "warmup": "1s",
    "establish_timeout": "5s",
    "rate": "10000",
    "locust_arg": ["--messages-per-session=1000"],
}
#: ... then where each design stops holding the SLO (``capacity`` in a subfolder): on the axis where a
#: thread per connection shows its limit, connected users each at 50 msg/s, from 32 users by doubling,
#: bisected to 50%, at most 35 s of trials per design (the whole job: under 5 minutes on two cores).
#: Past about 400 users (20,000 msg/s) one Locust process on two cores is the bottleneck: the search
#: then says so ("≥ X", limited by the generator) rather than blame the server.
RUN_CAPACITY = ("--axis", "users", "--rate-per-user", "50", "--start", "32", "--resolution", "0.5", "--confirm", "0",
                "--budget", "35", "--duration", "2s", "--warmup", "1s", "--establish-timeout", "5s", "--quiet")


#: The protocol profiles (harness.profiles imports neither Locust nor gevent).
PROTOCOLS = tuple(sorted(PROFILES))


def add_sweep_options(p: argparse.ArgumentParser, defaults: dict[str, object], *, search: bool = False) -> None:
    """The options of every command that runs cells. ``search``: a capacity search, which sets each cell's
    rate itself (no ``--rate``), keeps going past a failed cell and checks capacities, not cells."""
    p.add_argument("--variants", type=variant_names, default=defaults.get("variants", "threaded"), help=f"comma-separated, from: {', '.join(sorted(VARIANTS))} (default %(default)s)")
    levels = "--axis rate: one search at each level (default 100)" if search else "concurrency levels (default %(default)s)"
    p.add_argument("--users", type=user_counts, default=defaults.get("users", "1,10,100"), help=levels)
    p.add_argument("--duration", type=duration, default=defaults.get("duration", "20s"), help="steady window of each cell (default %(default)s)")
    p.add_argument("--warmup", type=duration, default=defaults.get("warmup", "5s"), help="settle after every user is established, dropped from each cell's figures (default %(default)s)")
    p.add_argument("--establish-timeout", type=duration, default=defaults.get("establish_timeout", "30s"), help="deadline for every user to connect and get its first reply; the window starts after that or at the deadline (default %(default)s)")
    p.add_argument("--scenario", default="chat", help="scenario file or shipped name (default %(default)s)")
    if search:  # --rate is taken only to be refused in words (else it would abbreviate --rate-per-user)
        p.add_argument("--rate", type=positive_number, default=None, help=argparse.SUPPRESS)
        p.set_defaults(stop_on_failure=False)
    else:
        p.add_argument("--rate", type=positive_number, default=defaults.get("rate"), help="open loop: messages/s over all users (default: %(default)s; None: closed loop)")
    p.add_argument("--workers", type=int, default=0, help="Locust worker processes (--processes); 0: one process")
    p.add_argument("--expect-workers", type=int, default=0, metavar="N", help="run Locust as master and wait for N workers (locust -f SCENARIO --worker --master-host HOST)")
    p.add_argument("--master-bind", default="127.0.0.1:5557", metavar="HOST:PORT", help="with --expect-workers: where the master listens for workers (default %(default)s; *:5557 for every interface)")
    p.add_argument("--backlog", type=int, default=6, help="listen() backlog for started servers (default 6, the tutorial's)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG", help="extra argument for every started server (repeatable)")
    p.add_argument("--locust-arg", action="append", default=list(defaults.get("locust_arg", [])), metavar="ARG", help="extra argument for Locust (repeatable), e.g. --locust-arg=--think-time=1")
    p.add_argument("--target", default=None, metavar="HOST:PORT", help="sweep a server you run (any address or name, [IPV6]:PORT) instead of starting variants")
    p.add_argument("--pid", type=int, default=None, help="with --target: the server's PID on this machine, to sample it (without it: no server figures)")
    p.add_argument("--worker-wait", type=duration, default=WORKER_WAIT_S, metavar="SECONDS", help="with --expect-workers: each cell's wait for its workers; fewer: the cell fails (default %(default)gs)")
    if not search:
        p.add_argument("--stop-on-failure", action="store_true", help="a failed cell ends the sweep (default: go on with the next cell)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="the target's protocol profile (default chat)")
    p.add_argument("--message", default=None, metavar="TEXT", help="the message the profile sends (redis: a command, e.g. 'GET k')")
    p.add_argument("--quit-message", default=None, metavar="TEXT", help="line: the session's last message (empty: just close)")
    p.add_argument("--tls", action="store_true", help="connect with TLS (probed before any cell)")
    p.add_argument("--tls-ca", type=Path, default=None, metavar="FILE", help="with --tls: the CA certificate(s) to verify the server with")
    p.add_argument("--tls-insecure", action="store_true", help="with --tls: do not verify the server's certificate (warned about)")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {DEFAULT_OUT}/RUN-ID); must be new")
    slo_for = "each trial" if search else "the report's findings"
    p.add_argument("--slo-ms", type=positive_number, default=10.0, help=f"message p99 target for {slo_for} (default %(default)s)")
    p.add_argument("--check", type=check_expr, action="append", default=[], metavar="EXPR", help="e.g. 'capacity.holds>=1000' (also capacity.fails, .confirmed, .trials)" if search else "e.g. 'message.p99<5ms', 'errors==0', 'throughput>=10000'; exit 1 if broken")
    p.add_argument("--quiet", action="store_true", help="one line per trial, its verdict" if search else "one line per cell, no progress bar")
    p.add_argument("--no-report", action="store_true", help="write the result files only (swarmbench report RESULTS builds the report later)")


def version() -> str:
    """The installed swarmbench's version ("unknown" in a checkout that was never installed)."""
    try:
        return metadata.version("swarmbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="swarmbench", description="Load-test concurrent TCP servers with Locust.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="the main job: a short sweep of every variant, where each stops holding the SLO, then the report")
    add_sweep_options(run, RUN_DEFAULTS)
    run.add_argument("--no-capacity", action="store_true", help="the sweep alone: skip the search for each design's limit")
    sweep = sub.add_parser("sweep", help="sweep variants x concurrency and write results + report")
    add_sweep_options(sweep, {})
    capacity = sub.add_parser("capacity", help="for each variant and level, the highest load that holds the SLO")
    add_sweep_options(capacity, CAPACITY_DEFAULTS, search=True)
    add_capacity_options(capacity)
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
    worker.add_argument("--master-timeout", type=duration, default=120.0, metavar="SECONDS", help="exit when no master started a cell for this long; in a cell, leave a master silent this long (at most 60 s; default %(default)gs)")
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
    bind = master_bind(args.master_bind)
    locust_args_ok(args.locust_arg)
    server_args_ok(args.server_arg)
    if args.worker_wait < 1:
        raise UsageError("--worker-wait must be at least 1s")
    forwarded = protocol_args(args)
    arguments_fit(forwarded, args.locust_arg, args.server_arg, argv)
    tls = TlsSettings(args.tls_ca, args.tls_insecure) if args.tls else None
    target = None
    variants = args.variants
    if args.target is not None:
        try:
            target = split_host(args.target)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.pid is not None:
            live_pid(args.pid)  # server sampling is local: a process on this machine
        try:
            probe(*target, tls=tls)
        except ProbeError as exc:
            raise UsageError(str(exc)) from None
        variants = ("target",)
    elif args.pid is not None:
        raise UsageError("--pid goes with --target")
    else:  # started variants: probed after each start (harness.sweep), their certificate checked now
        started_tls_ok(args.server_arg, args.tls)
        if tls is not None:
            try:
                tls.context()  # a CA file that is no certificate: now, not after a server started
            except ProbeError as exc:
                raise UsageError(str(exc)) from None
    if args.out is not None:
        out_name_ok(args.out)
    out = make_out_dir(args.out, DEFAULT_OUT)  # the last check, and the first thing made
    if args.tls_insecure:  # a refused sweep prints its one line only
        print("swarmbench: warning: --tls-insecure: the server's certificate is not verified", file=sys.stderr)
    return SweepConfig(
        out=out, variants=variants, users=args.users, duration_s=args.duration, warmup_s=args.warmup,
        scenario=scenario, rate=args.rate, workers=args.workers, backlog=args.backlog,
        server_args=tuple(args.server_arg), locust_args=(*args.locust_arg, *forwarded), target=target,
        target_pid=args.pid, expect_workers=args.expect_workers,
        worker_wait_s=args.worker_wait, stop_on_failure=args.stop_on_failure,
        master_bind=bind, argv=tuple(argv), establish_timeout=establish_timeout(args), tls=tls,
    )  # fmt: skip


def establish_timeout(args: argparse.Namespace) -> float:
    value = float(getattr(args, "establish_timeout", 30.0))
    if not 0 < value < 3600:
        raise UsageError(f"--establish-timeout must be above 0 s and below 1 h (got {value:g} s)")
    return value


def protocol_args(args: argparse.Namespace) -> list[str]:
    """The profile and TLS options, checked, as Locust arguments (only those given: chat needs none)."""
    if (args.tls_ca is not None or args.tls_insecure) and not args.tls:
        raise UsageError("--tls-ca and --tls-insecure go with --tls")
    if args.tls_ca is not None and args.tls_insecure:
        raise UsageError("--tls-ca verifies the server and --tls-insecure does not: choose one")
    if args.tls_ca is not None and (problem := file_problem(args.tls_ca)):
        raise UsageError(f"--tls-ca {args.tls_ca}: {problem}")
    if args.message is not None:
        check_message(args.protocol or "chat", args.message)
    quit_message_ok(args.protocol or "chat", args.quit_message)
    out = [f"--protocol={args.protocol}"] if args.protocol is not None else []
    out += [f"--message={args.message}"] if args.message is not None else []
    out += [f"--quit-message={args.quit_message}"] if args.quit_message is not None else []
    out += ["--tls"] if args.tls else []
    out += [f"--tls-ca={args.tls_ca.resolve()}"] if args.tls_ca is not None else []
    if args.tls_insecure:
        out.append("--tls-insecure")  # warned about once every check has passed (sweep_config)
    return out


def check_message(protocol: str, message: str) -> None:
    """A --message the profile cannot encode is refused before any cell (the profile's own rule)."""
    try:
        PROFILES[protocol]().encode(message)
    except ValueError as exc:
        raise UsageError(f"{exc}; got {message[:60]!r}") from None


def cmd_sweep(args: argparse.Namespace, argv: Sequence[str]) -> int:
    cfg = sweep_config(args, argv)
    received: list[int] = []
    with stop_signals_as_ctrl_c(received):
        with make_progress(cfg, quiet=args.quiet) as progress:
            outcome = run_sweep(cfg, StopOnSignal(progress, received))
        if args.command == "run" and not args.no_capacity and not (received or outcome.interrupted
                                                                   or outcome.write_error):
            print("where each design stops holding the SLO:")
            search = build_parser().parse_args(capacity_argv(args, cfg.out / CAPACITY_DIR))
            searched = cmd_capacity(search, report=False)
            if searched > 128:  # a stop signal during the search (128 + N): report what is known, then stop
                received.append(searched - 128)
        print(f"results: {cfg.out}")
        reported = True
        try:
            if not args.no_report:
                from reports import build_report  # matplotlib loads only when a report is made

                print(f"report:  {build_report(cfg.out, slo_ms=args.slo_ms)}")
        except (ResultError, OSError) as exc:
            print(f"swarmbench: the report was not written: {one_line(exc)}", file=sys.stderr)
            reported = False
    outcome.interrupted = outcome.interrupted or bool(received)
    if outcome.write_error is not None:
        print(f"swarmbench: error: the sweep stopped: {outcome.write_error}", file=sys.stderr)
        return 1
    if outcome.interrupted:
        print("interrupted: the finished cells are kept and reported", file=sys.stderr)
        return exit_code(received)
    broken = evaluate(args.check, [(f"{c.variant} u={c.users}", cell_metrics(c)) for c in outcome.cells])
    failed = [c for c in outcome.cells if c.status == "failed"]
    for line in broken:
        print(line, file=sys.stderr)
    for cell in failed:
        print(f"cell {cell.variant} u={cell.users} failed: {cell.error}", file=sys.stderr)
    for cell in outcome.cells:
        if cell.status == "server-died":
            print(f"cell {cell.variant} u={cell.users}: the server died (exit code {cell.server.exit_code})", file=sys.stderr)
    return 1 if broken or failed or not reported else 0


def capacity_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """``swarmbench capacity`` for the run's designs (or its --target), with the sweep's server options."""
    argv = ["capacity", *RUN_CAPACITY, "--slo-ms", f"{args.slo_ms:g}", "--backlog", str(args.backlog),
            "--scenario", str(args.scenario), "--workers", str(args.workers), "--out", str(out)]
    if args.target is not None:
        argv += ["--target", args.target] + (["--pid", str(args.pid)] if args.pid is not None else [])
    else:
        argv += ["--variants", ",".join(args.variants)]
    # the sweep's Locust options too (the main job's sessions of 1000 messages: a session that ends
    # reconnects, and the slots it misses then would count against the achieved rate)
    return argv + [f"--server-arg={arg}" for arg in args.server_arg] + [f"--locust-arg={arg}" for arg in args.locust_arg]


def cmd_capacity(args: argparse.Namespace, argv: Sequence[str] = (), report: bool = True) -> int:
    ask = capacity_ask(args)  # the search's own checks first: nothing is made before they pass
    cfg = sweep_config(args, argv)
    code = run_capacity(cfg, ask, args.check, quiet=args.quiet)
    if report and not args.no_report:
        from reports import build_report  # matplotlib loads only when a report is made

        try:
            print(f"report:   {build_report(cfg.out, slo_ms=args.slo_ms)}")
        except (ResultError, OSError) as exc:
            print(f"swarmbench: the report was not written: {one_line(exc)}", file=sys.stderr)
            return code or 1
    return code


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


def one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return " ".join(str(exc).split())


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
        if args.command == "capacity":
            return cmd_capacity(args, argv)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "worker":
            return cmd_worker(args)
        return cmd_compare(args)
    except (UsageError, ResultError, OSError) as exc:
        print(f"swarmbench: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("swarmbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
