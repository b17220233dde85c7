"""Locust event listeners: scenario options, µs histograms per second, generator CPU, the file.

Importing this module registers the listeners (``harness.tcp`` imports it, and
scenario files import ``harness.tcp``). It works the same on a local runner,
a master and its workers: workers ship what they recorded since their last
report inside Locust's own ``report_to_master`` message (the same message that
carries Locust's stats, so both are cut at the same instant), and the master
adds it second by second in ``worker_report``.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from harness.addresses import parse_host
from harness.health import CpuMonitor, LoopLagProbe
from harness.histograms import Recorder
from harness.machine import raise_nofile_limit
from harness.sources import MAX_ADDRESSES
from server.protocol import MAX_MESSAGE

LOG = logging.getLogger("swarmbench")

DEFAULT_HOST = "tcp://127.0.0.1:8000"
DEFAULT_MESSAGES_PER_SESSION = 10
DEFAULT_MESSAGE_SIZE = 12
#: Past the SYN resends of a full listen queue (1, 3, 7, 15, 31 s): a slow connect is a measurement.
DEFAULT_CONNECT_TIMEOUT = 35.0
#: A process above this share of one core is saturated: its figures describe the generator.
SATURATED_PERCENT = 90.0
#: Between two steps of the once-a-second flush: long enough to be a timer (the loop polls sockets).
FLUSH_PAUSE = 0.0001
_TEXT = b"Hello, world! "


@dataclass(frozen=True, slots=True)
class ScenarioOptions:
    """The scenario's own options, read from Locust's parsed options."""

    messages_per_session: int = DEFAULT_MESSAGES_PER_SESSION
    message_size: int = DEFAULT_MESSAGE_SIZE
    think_time: float = 0.0
    rate: float = 0.0
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    source_addresses: int = 0  # 0: as many as the user count needs (harness.sources.auto_count)

    @property
    def payload(self) -> bytes:
        """Short text like the tutorial's client sends, ``message_size`` bytes long."""
        return (_TEXT * (self.message_size // len(_TEXT) + 1))[: self.message_size]


def scenario_options(parsed: Any) -> ScenarioOptions:
    """Validate and return the options; a one-line ``ValueError`` when one is wrong."""
    if parsed is None:
        return ScenarioOptions()
    opts = ScenarioOptions(
        messages_per_session=int(getattr(parsed, "messages_per_session", DEFAULT_MESSAGES_PER_SESSION)),
        message_size=int(getattr(parsed, "message_size", DEFAULT_MESSAGE_SIZE)),
        think_time=float(getattr(parsed, "think_time", 0.0) or 0.0),
        rate=float(getattr(parsed, "rate", 0.0) or 0.0),
        connect_timeout=float(getattr(parsed, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        source_addresses=int(getattr(parsed, "source_addresses", 0) or 0),
    )
    if opts.messages_per_session < 1:
        raise ValueError(f"--messages-per-session must be at least 1 (got {opts.messages_per_session})")
    if not 1 <= opts.message_size <= MAX_MESSAGE:
        raise ValueError(
            f"--message-size must be 1..{MAX_MESSAGE} bytes (got {opts.message_size}): "
            "the protocol has no framing and the server reads recv(5120)"
        )
    if opts.think_time < 0 or not math.isfinite(opts.think_time):
        raise ValueError(f"--think-time must be a number of seconds >= 0 (got {opts.think_time})")
    if opts.rate < 0 or not math.isfinite(opts.rate):
        raise ValueError(f"--rate must be messages per second >= 0 (got {opts.rate})")
    if not 0 < opts.connect_timeout < 3600:
        raise ValueError(f"--connect-timeout must be seconds in (0, 3600) (got {opts.connect_timeout})")
    if not 0 <= opts.source_addresses <= MAX_ADDRESSES:
        raise ValueError(f"--source-addresses must be 0 (automatic) or 1..{MAX_ADDRESSES} (got {opts.source_addresses})")
    if opts.rate and opts.think_time:
        raise ValueError("--rate and --think-time exclude each other: the rate sets the pace")
    return opts


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    # parser.add_argument (not a group's): only Locust's own add_argument marks options for the web UI
    add = parser.add_argument
    add("--messages-per-session", type=int, default=DEFAULT_MESSAGES_PER_SESSION, include_in_web_ui=True,
        env_var="SWARMBENCH_MESSAGES_PER_SESSION", help="messages per connection before --quit-- (default 10)")
    add("--message-size", type=int, default=DEFAULT_MESSAGE_SIZE, include_in_web_ui=True,
        env_var="SWARMBENCH_MESSAGE_SIZE",
        help=f"bytes per message, 1..{MAX_MESSAGE} (default 12: short text like the tutorial's)")
    add("--think-time", type=float, default=0.0, include_in_web_ui=True, env_var="SWARMBENCH_THINK_TIME",
        help="seconds between a reply and the next message (default 0)")
    add("--rate", type=float, default=0.0, include_in_web_ui=True, env_var="SWARMBENCH_RATE",
        help="open loop: messages per second over all users, latency measured from the intended "
             "send time (default 0: closed loop)")
    add("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT, include_in_web_ui=True,
        env_var="SWARMBENCH_CONNECT_TIMEOUT",
        help="seconds before a connect counts as failed (default 35: SYNs a full listen queue dropped "
             "are resent after 1, 3, 7, 15 and 31 s; those slow connects are measurements)")
    add("--source-addresses", type=int, default=0, include_in_web_ui=True, env_var="SWARMBENCH_SOURCE_ADDRESSES",
        help="source addresses 127.0.0.1, 127.0.0.2, ... for an IPv4 loopback target (default 0: "
             "as many as the users need, one per ~14k connections, more if ports run out)")
    add("--hdr-file", type=str, default="", include_in_web_ui=True, env_var="SWARMBENCH_HDR_FILE",
        help="write µs histograms here (JSON), with one .hgrm per request name next to it")  # fmt: skip


class Run:
    """One test run in this process (a new one on each test_start)."""

    def __init__(self, environment: Any, role: str) -> None:
        self.environment = environment
        self.role = role
        self.recorder = Recorder(ship=role == "worker")
        self.started_at = time.time()
        self.spawned_at: float | None = None
        self.stopping_at: float | None = None
        self.ended_at: float | None = None
        self.users = 0
        self.cpu = CpuMonitor(role, self._local_users)
        self.remote_cpu: dict[str, dict[str, Any]] = {}
        # the master runs no users: its idle loop would only dilute the workers' lag
        self.lag = None if role == "master" else LoopLagProbe(self.recorder.buffer("loop_lag").append)
        self.rotator = gevent.spawn(self._rotate)
        self.stopped = False
        self.written = False

    def _local_users(self) -> int:
        runner = getattr(self.environment, "runner", None)
        return 0 if self.role == "master" or runner is None else int(runner.user_count)

    def _rotate(self) -> None:
        """Close each wall-clock second's buffers just after the second ends, in short steps.

        A positive sleep between steps, not sleep(0): gevent runs sleep(0)
        callbacks back to back for up to its switch interval (5 ms) without
        polling sockets, so only a timer lets waiting users' replies in.
        """
        while True:
            now = time.time()
            gevent.sleep(math.floor(now) + 1.0005 - now)
            for _ in self.recorder.flush_steps(int(time.time())):
                gevent.sleep(FLUSH_PAUSE)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.rotator.kill(block=False)  # between steps: flush() below finishes its work
        if self.lag is not None:
            self.lag.stop()
        self.cpu.stop()
        self.recorder.flush()
        self.ended_at = time.time()
        if self.stopping_at is None:
            self.stopping_at = self.ended_at

    # -- the file ---------------------------------------------------------------------
    def achieved_rate(self) -> float:
        """Messages per second over the whole seconds between 'all users spawned' and 'stopping'."""
        per_second = self.recorder.per_second.get("message", {})
        start = self.spawned_at or self.started_at
        end = self.stopping_at or self.ended_at or time.time()
        first, last = math.ceil(start), math.floor(end)
        if last - first >= 1:
            return sum(per_second.get(t, 0) for t in range(first, last)) / (last - first)
        return self.recorder.count("message") / max(end - self.started_at, 1e-9)

    def generator(self) -> dict[str, Any]:
        """Every process's health (this one and each worker's last report) and the saturated mark."""
        processes = [self.cpu.summary(), *self.remote_cpu.values()]
        steady = [p["cpu_percent_max_steady"] for p in processes if p.get("cpu_percent_max_steady") is not None]
        whole = max((p["cpu_percent_max"] for p in processes), default=0.0)
        peak = max(steady) if steady else whole
        return {
            "processes": processes,
            "cpu_percent_max": peak,  # from spawning-complete on, when known
            "cpu_percent_max_all": whole,
            "rss_bytes_total": sum(p.get("rss_bytes_max", 0) for p in processes),
            "users_max": sum(p.get("users_max", 0) for p in processes),
            "saturated": peak > SATURATED_PERCENT,
        }

    def write(self, path: Path) -> dict[str, Any]:
        opts = scenario_options(self.environment.parsed_options)
        rate = round(self.achieved_rate(), 2)
        options = {
            "rate": opts.rate,
            "messages_per_session": opts.messages_per_session,
            "message_size": opts.message_size,
            "think_time": opts.think_time,
            "users": self.users,
            "achieved_rate": rate,
        }
        summary = {
            "message_count": self.recorder.count("message"),
            "duration_s": round((self.ended_at or time.time()) - self.started_at, 3),
            "achieved_rate": rate,
        }
        return self.recorder.write(
            path,
            started_at=self.started_at,
            ended_at=self.ended_at or time.time(),
            spawned_at=self.spawned_at,
            stopping_at=self.stopping_at,
            generator=self.generator(),
            options=options,
            summary=summary,
        )


class Plugin:
    """The process-wide state the listeners share."""

    role = "local"
    environment: Any = None
    run: Run | None = None


STATE = Plugin()


def current_run() -> Run:
    """The run users record into (one is made when Locust is driven without test_start)."""
    if STATE.run is None:
        STATE.run = Run(STATE.environment, STATE.role)
    return STATE.run


def total_users(environment: Any) -> int:
    """All users of the test, over every worker (workers learn it from the master's options)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return int(getattr(environment.parsed_options, "swarmbench_users", 0) or runner.target_user_count or 1)
    return int(getattr(runner, "target_user_count", 0) or 1)


def fail(message: str) -> None:
    """A one-line error and exit 1 (never a traceback) for a bad command line."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


@events.init.add_listener
def _on_init(environment: Any, runner: Any = None, **_kw: Any) -> None:
    STATE.environment = environment
    STATE.role = (
        "master" if isinstance(runner, MasterRunner) else "worker" if isinstance(runner, WorkerRunner) else "local"
    )
    raise_nofile_limit()  # Locust raises it only to 10,000: not enough for 10,000 users and the rest
    if STATE.role == "worker" or environment.parsed_options is None:
        return

    try:
        scenario_options(environment.parsed_options)
        hosts = {environment.host} if environment.host else {u.host for u in environment.user_classes}
        for host in hosts:
            parse_host(host or DEFAULT_HOST)
    except ValueError as exc:
        fail(str(exc))
    hdr = environment.parsed_options.hdr_file
    if hdr and Path(hdr).is_dir():
        fail(f"--hdr-file {hdr}: is a directory")


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kw: Any) -> None:
    if STATE.run is not None:
        STATE.run.stop()
    STATE.environment = environment
    STATE.run = Run(environment, STATE.role)
    STATE.run.users = total_users(environment)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if STATE.role == "local" and STATE.run.users + 256 > soft:
        LOG.warning("Swarmbench: %d users but only %d file descriptors (ulimit -n): connects will fail "
                    "with EMFILE; raise the hard limit or use --processes", STATE.run.users, soft)
    if STATE.role == "master" and environment.parsed_options is not None:
        # a custom option travels to the workers with every spawn message
        environment.parsed_options.swarmbench_users = environment.runner.target_user_count


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count: int = 0, **_kw: Any) -> None:
    run = STATE.run
    if run is not None and run.spawned_at is None:
        run.spawned_at = run.cpu.steady_from = time.time()
        run.users = max(run.users, int(user_count or 0))


@events.test_stopping.add_listener
def _on_test_stopping(**_kw: Any) -> None:
    if STATE.run is not None and STATE.run.stopping_at is None:
        STATE.run.stopping_at = STATE.run.cpu.steady_until = time.time()


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_kw: Any) -> None:
    run = STATE.run
    if run is None:
        return
    run.stop()
    if STATE.role != "worker":
        _write(final=STATE.role == "local")


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    run = STATE.run
    if run is not None:
        data["swarmbench"] = {"report": run.recorder.take_report(), "cpu": run.cpu.summary()}


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    run = STATE.run
    payload = data.get("swarmbench")
    if run is None or not payload:
        return
    run.recorder.merge_report(payload["report"])
    run.remote_cpu[client_id] = payload["cpu"]
    if run.stopped and run.recorder.changed:
        _write(final=False)  # a late report (after the master stopped): keep the file whole


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kw: Any) -> None:
    # registered at import, before the runner's own listener: with reverse=True this runs
    # after the master has sent "quit" and waited for the workers' final reports
    # (a local runner writes at test_stop, which on Ctrl-C comes after this)
    run = STATE.run
    if run is not None and STATE.role == "master":
        run.stop()
        _write(final=True)


def _write(final: bool) -> None:
    run = STATE.run
    environment = STATE.environment
    if run is None or environment is None:
        return
    run.recorder.flush()
    parsed = environment.parsed_options
    path = getattr(parsed, "hdr_file", "") if parsed is not None else ""
    rate = run.achieved_rate()
    if path:
        run.write(Path(path))
    run.written = True
    run.recorder.changed = False
    if not final:
        return
    opts = scenario_options(parsed)
    if opts.rate:
        LOG.info("Swarmbench: achieved %.1f messages/s (asked %.1f/s)", rate, opts.rate)
    for name, hist in sorted(run.recorder.totals.items()):
        count = hist.get_total_count()
        if count:
            p = hist.get_percentile_to_value_dict([50.0, 99.0, 99.9])
            LOG.info(
                "Swarmbench %-20s n=%d p50=%dus p99=%dus p99.9=%dus max=%dus",
                name, count, p[50.0], p[99.0], p[99.9], hist.get_max_value(),
            )  # fmt: skip
    generator = run.generator()
    if generator["saturated"]:
        LOG.warning(
            "Swarmbench: generator saturated (a process peaked at %.0f%% of a core): "
            "the figures describe the generator, not the server",
            generator["cpu_percent_max"],
        )
    if path:
        LOG.info("Swarmbench: histograms written to %s", path)
