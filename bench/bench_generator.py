"""How much does the load generator cost? Messages/s and generator CPU µs per message.

One server, then at each connection count a bare gevent socket loop (``send``
and ``recv``, as anyone would write it: the issue's floor), a bare gevent loop
on the harness's own message path (``gevent-raw``: the OS socket's send, gevent's
wait for readable, one recv; harness.user.raw_socket), a bare asyncio loop
(uvloop when installed) and the Locust ``TcpUser`` (scenarios/chat.py,
headless), each in its own process, interleaved (gevent, gevent-raw, asyncio,
locust, gevent, ...) ``--repeat`` times so drift on a shared machine hits all
alike. The targets are against the first; the ratio to ``gevent-raw`` is what
Locust and the recording cost on top of the same primitives. Every client sends
the same 12 bytes (chat.py's default message) and waits for one ``-``. By
default nobody reconnects (Locust gets --messages-per-session 10**9): the figure
of interest is the per-message path, and connect/accept costs are the kernel's
and the server's; with ``--messages-per-session K`` all four quit and reconnect
every K messages.

All clients are measured the same way from here: once the server sees every
connection (spawning done), a window of ``--duration`` whole wall-clock seconds;
the client's CPU (user+sys) from /proc at its two ends, its messages from its
per-second counts (Locust's: the --hdr-file's per-second histograms), the
server tree's CPU% from harness.server_sampler, and the machine's busy CPU.
Each ratio pairs a repetition's Locust run with the same repetition's bare run,
seconds apart, and the verdict is the median of those ratios: this shared VM's
speed drifts by 15% over minutes, and a ratio of medians taken across
repetitions would read that drift as the generator's.

Then (bench/open_loop.py) the open loop at ``--open-rates`` over 100 users
(achieved vs asked, send_lag p99) and the highest rate one process holds within
1%, and each protocol profile's CPU per message as a ratio of chat's.

    python bench/bench_generator.py [--duration 3] [--repeat 3] [--connections 1,10,100]
                                    [--server "asyncio --loop uvloop"] [--messages-per-session 0]
                                    [--open-rates 20000,40000] [--no-ceiling] [--no-profiles]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.results.histogram_file import Interval, load_histogram_file  # noqa: E402
from harness.kernel import ConnectionCounter  # noqa: E402
from harness.server_sampler import Sampler, summarize  # noqa: E402
from harness.server_process import (  # noqa: E402
    RunningServer,
    ServerStartError,
    die_with_parent,
    start_server,
)
from bare_clients import PAYLOAD  # noqa: E402  (bench/ is the script's folder)
from server.args import Parser  # noqa: E402

CLIENTS = ("gevent", "gevent-raw", "asyncio", "locust")
#: Measured on this 2-core VM (see the module's report): uvloop's single process leaves the
#: generator a whole core; prefork --processes 2 competes with it for the second one.
DEFAULT_SERVER = "asyncio --loop uvloop"
NEVER = 10**9  # messages per session meaning "no reconnects"
SETTLE_S = 0.5  # after the last connection, before the window's first whole second
SATURATED = 90.0  # % of a core
TARGET_CPU, TARGET_RATE, TARGET_LEVELS = 1.10, 0.90, (10, 100)


@dataclass(frozen=True)
class Figure:
    rate: float  # messages/s over the window
    cpu_us: float  # client CPU µs per message
    client_pct: float  # client CPU, % of one core
    server_pct: float  # server tree CPU, % of one core (mean over the window)
    machine_pct: float  # every core's busy time, % of one core (2 cores: up to 200)
    flavour: str


def _busy(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine."""
    total = sum(times)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def _sleep_until(wall: float) -> None:
    while (left := wall - time.time()) > 0:
        time.sleep(min(left, 0.5))


def _count_at(ticks: list[tuple[float, int]], t: float) -> float | None:
    """The count at instant ``t``, between the ticks around it (a starved client's tick can come late, even a
    second late); None outside them."""
    for (t0, n0), (t1, n1) in zip(ticks, ticks[1:]):
        if t0 <= t <= t1:
            return n1 if t1 == t0 else n0 + (n1 - n0) * (t - t0) / (t1 - t0)
    return None


def _message_count(row: Interval) -> int:
    from hdrh.histogram import HdrHistogram

    encoded = row.histograms.get("message")
    return HdrHistogram.decode(encoded).get_total_count() if encoded else 0


def measure(kind: str, server: Any, conns: int, duration: int, per_session: int, tmp: Path,
            extra: tuple[str, ...] = ()) -> Figure:
    """Start one client, wait for its connections, measure a window of whole seconds, stop it.

    ``server``: a RunningServer or anything with its ``url``, ``port`` and ``pid``; ``extra``: Locust's options.
    """
    out, hdr = tmp / f"{kind}-{conns}.out", tmp / f"{kind}-{conns}.json"
    bound = 30 + SETTLE_S + duration  # only a safety bound: the window is timed here
    if kind == "locust":
        argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "chat.py"), "--headless",
                "--host", server.url, "-u", str(conns), "-r", str(conns), "-t", f"{bound:.0f}s",
                "--messages-per-session", str(per_session), "--message-size", str(len(PAYLOAD)),
                "--hdr-file", str(hdr), "--only-summary", "--loglevel", "ERROR", "--stop-timeout", "2", *extra]  # fmt: skip
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "--client", kind, "--port", str(server.port),
                "--connections", str(conns), "--messages-per-session", str(per_session),
                "--duration", str(math.ceil(bound))]  # fmt: skip
    if hdr.exists():
        hdr.unlink()
    with open(out, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)  # fmt: skip
    try:
        counter = ConnectionCounter(server.pid, server.port)
        wanted = conns if per_session == NEVER else max(1, math.ceil(conns * 0.9))  # reconnects: a few are between
        deadline = time.monotonic() + 30
        while counter.count() < wanted:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} client: {counter.count()} of {conns} connections; {_tail(out)}")
            time.sleep(0.005)
        start = math.ceil(time.time() + SETTLE_S)
        me = psutil.Process(proc.pid)
        _sleep_until(start)
        sampler = Sampler(server.pid, interval=0.25).start()
        c0, m0 = sum(me.cpu_times()[:2]), _busy(psutil.cpu_times())
        _sleep_until(start + duration)
        c1, m1 = sum(me.cpu_times()[:2]), _busy(psutil.cpu_times())
        samples = sampler.stop()
        os.killpg(proc.pid, signal.SIGTERM)  # bare loops quit and print; Locust stops its users and writes
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if kind == "locust":
        data = load_histogram_file(hdr)
        failures = sum(sum(row.values()) for row in data.failures.values())
        if failures:
            raise RuntimeError(f"locust: {failures} failures during the run")
        rows = {row.t: row for row in data.intervals}
        messages = sum(_message_count(rows[t]) for t in range(start, start + duration) if t in rows)
        flavour = "locust"
    else:
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} client exited {proc.returncode}: {_tail(out)}")
        result = json.loads(out.read_text().strip().splitlines()[-1])
        ticks = sorted((float(t), n) for t, n in result["ticks"].items())
        first, last = _count_at(ticks, start), _count_at(ticks, start + duration)
        if first is None or last is None:
            raise RuntimeError(f"{kind} client: no count at the window's ends ({start}..{start + duration}; ticks {[round(t, 3) for t, _ in ticks][-6:]})")
        messages, flavour = round(last - first), result["flavour"]
    if messages <= 0:
        raise RuntimeError(f"{kind}: no messages in the window")
    elapsed = m1[1] - m0[1]
    return Figure(
        rate=messages / duration,
        cpu_us=(c1 - c0) / messages * 1e6,
        client_pct=100.0 * (c1 - c0) / duration,
        server_pct=float(summarize(samples, start, start + duration + 0.2)["cpu_percent_mean"]),
        machine_pct=100.0 * (m1[0] - m0[0]) / elapsed * (os.cpu_count() or 1) if elapsed > 0 else 0.0,
        flavour=flavour,
    )


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


# -- the report ------------------------------------------------------------------------------------
def server_cores(server: RunningServer) -> int:
    """How many cores the server can use: its worker processes (prefork), else one (one loop, or the GIL)."""
    try:
        children = len(psutil.Process(server.pid).children(recursive=True))
    except psutil.Error:
        children = 0
    return max(1, min(children, os.cpu_count() or 1))


def limit(client: float, server: float, machine: float, cores: int) -> str:
    """Which side ran out of CPU (medians of the window's % of a core); else the machine, else neither."""
    full = [name for name, busy in (("generator", client >= SATURATED), ("server", server >= SATURATED * cores)) if busy]
    if full:
        return "+".join(full)
    if machine >= SATURATED * (os.cpu_count() or 1):
        return "machine: all cores busy, others too"
    return "neither (round trips)"


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def report(results: dict[int, dict[str, list[Figure]]], cores: int) -> None:
    print("\nmedian [min-max] over the repetitions; CPU in % of one core over each window "
          "(others: the rest of the machine's busy time)")
    print(f"{'conns':>5} {'client':<8} {'msgs/s':>25} {'cpu us/msg':>18} {'client%':>8} {'server%':>8} "
          f"{'others%':>8}  saturated")  # fmt: skip
    for conns, by_kind in results.items():
        for kind in CLIENTS:
            figs = by_kind[kind]
            med = [statistics.median(getattr(f, a) for f in figs) for a in ("client_pct", "server_pct", "machine_pct")]
            print(f"{conns:>5} {figs[0].flavour:<8} {spread([f.rate for f in figs], ',.0f'):>25} "
                  f"{spread([f.cpu_us for f in figs], '.1f'):>18} {med[0]:>8.0f} {med[1]:>8.0f} "
                  f"{max(med[2] - med[0] - med[1], 0.0):>8.0f}"
                  f"  {limit(*med, cores)}")  # fmt: skip
    print("\nLocust TcpUser / bare loop: the median of each repetition's ratio [min-max] (cpu: lower is better; "
          "msgs/s: higher is better)")
    print(f"{'conns':>5} {'cpu/gevent':>18} {'rate/gevent':>18} {'cpu/gev-raw':>18} {'rate/gev-raw':>18} "
          f"{'cpu/asyncio':>18} {'rate/asyncio':>18}")  # fmt: skip
    ratios = {}
    for conns, by_kind in results.items():
        row = []
        for bare in ("gevent", "gevent-raw", "asyncio"):
            pairs = list(zip(by_kind["locust"], by_kind[bare]))  # the same repetition: seconds apart
            cpu, rate = [lo.cpu_us / b.cpu_us for lo, b in pairs], [lo.rate / b.rate for lo, b in pairs]
            row += [cpu, rate]
        ratios[conns] = (statistics.median(row[0]), statistics.median(row[1]))
        print(f"{conns:>5} " + " ".join(f"{spread(r, '.2f') + 'x':>18}" for r in row))
    print()
    for conns, (cpu, rate) in ratios.items():
        if conns not in TARGET_LEVELS:
            print(f"{conns:>5} conns: cpu {cpu:.2f}x gevent, msgs/s {rate:.2f}x gevent (no target at this level)")
            continue
        cpu_ok, rate_ok = cpu <= TARGET_CPU, rate >= TARGET_RATE
        print(f"{conns:>5} conns: cpu {cpu:.2f}x gevent (target <= {TARGET_CPU}x) {'MET' if cpu_ok else 'MISSED'}; "
              f"msgs/s {rate:.2f}x gevent (target >= {TARGET_RATE}x) {'MET' if rate_ok else 'MISSED'}")  # fmt: skip


# -- entry point -----------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=3, help="whole seconds per measured window, 1..60 (default 3)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repetitions per figure, 1..20 (default 3)")
    p.add_argument("--connections", default="1,10,100", help="comma-separated counts, 1..1000 (default 1,10,100)")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"variant and its options (default {DEFAULT_SERVER!r})")
    p.add_argument("--messages-per-session", type=int, default=0,
                   help="every client quits and reconnects after this many messages (default 0: never)")
    p.add_argument("--open-rates", default="20000,40000",
                   help="open loop: comma-separated msg/s over 100 users (default 20000,40000; empty: none)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the search for the highest rate held")
    p.add_argument("--no-profiles", action="store_true", help="skip the protocol profiles' costs")
    p.add_argument("--client", choices=("gevent", "gevent-raw", "asyncio"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.duration <= (600 if args.client else 60):
        p.error("--duration must be 1..60 seconds")
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be 1..20")
    if not 0 <= args.messages_per_session <= NEVER:
        p.error(f"--messages-per-session must be 0 (never) or 1..{NEVER}")
    args.per_session = args.messages_per_session or NEVER
    try:
        args.levels = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        p.error(f"--connections: comma-separated integers, not {args.connections!r}")
    if not args.levels or not all(1 <= c <= 1000 for c in args.levels):
        p.error("--connections: each count must be 1..1000")
    try:
        args.rates = [float(r) for r in args.open_rates.split(",") if r.strip()]
    except ValueError:
        p.error(f"--open-rates: comma-separated msg/s, not {args.open_rates!r}")
    if not all(100 <= r <= 1_000_000 for r in args.rates):
        p.error("--open-rates: each rate must be 100..1000000 msg/s")
    if args.client and not 0 < args.port < 65536:
        p.error("--port must be 1..65535")
    from server.__main__ import build_parser
    from server.variants import VARIANTS

    words = shlex.split(args.server)
    if not words or words[0] not in VARIANTS:
        p.error(f"--server: the first word must be one of {', '.join(VARIANTS)} (got {args.server!r})")
    build_parser().parse_args(words)  # the server's own one-line error and exit 2 for a bad option
    args.variant, args.server_args = words[0], words[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.client:  # a child: loopback only, bounded by --duration seconds
        from bare_clients import asyncio_client, gevent_client

        limits = ("127.0.0.1", args.port, args.levels[0], args.per_session, args.duration)
        if args.client == "asyncio":
            result = asyncio_client(*limits)
        else:
            result = gevent_client(*limits, raw=args.client == "gevent-raw")
        print(json.dumps(result))
        return 0
    try:
        server = start_server(args.variant, backlog=1024, extra_args=args.server_args)
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results: dict[int, dict[str, list[Figure]]] = {}
    try:
        cores = server_cores(server)
        session = "no reconnects" if args.per_session == NEVER else f"reconnect every {args.per_session} messages"
        print(f"server: {args.server} (pid {server.pid}, {cores} core(s)) on {server.host}:{server.port}; "
              f"{os.cpu_count()} CPUs; {args.duration} s windows x {args.repeat} interleaved repetitions; "
              f"{len(PAYLOAD)}-byte messages, {session}", flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="swarmbench-bench-") as tmp:
            for conns in args.levels:
                results[conns] = {kind: [] for kind in CLIENTS}
                for rep in range(args.repeat):
                    for kind in CLIENTS:
                        f = measure(kind, server, conns, args.duration, args.per_session, Path(tmp))
                        results[conns][kind].append(f)
                        print(f"  {conns:>4} conns, rep {rep + 1}/{args.repeat}, {f.flavour:<7} {f.rate:>9,.0f} msg/s "
                              f"{f.cpu_us:>6.1f} us/msg  client {f.client_pct:>3.0f}%  server {f.server_pct:>3.0f}%  "
                              f"others {max(f.machine_pct - f.client_pct - f.server_pct, 0):>3.0f}%", flush=True)  # fmt: skip
        report(results, cores)
        from open_loop import extras  # bench/open_loop.py: the open loop and the profiles

        extras(args, server, measure, spread, NEVER)
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError, psutil.Error) as exc:
        print(f"error: a measurement failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
