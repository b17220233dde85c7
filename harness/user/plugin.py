"""Swarmbench inside Locust: options, per-second µs histograms, generator health, the file.

Importing this module adds the scenario options and one listener for ``init``,
which hangs a :class:`Plugin` on the environment (``environment.swarmbench``),
as Locust hangs its per-run state on the Runner. The plugin registers its own
listeners, bound to itself, and starts a new :class:`Run` at every
``test_start``; the run owns everything a run needs (recorder, watchdog,
source-address pools, CPU monitor, loop-lag probe). Nothing lives in module
globals, so two environments in one process (tests do this) do not mix.

It works the same on a local runner, a master and its workers: workers ship
what they recorded since their last report inside Locust's own
``report_to_master`` message (the message that carries Locust's stats, so both
are cut at the same instant), and the master adds it second by second.
"""

from __future__ import annotations

import enum
import logging
import math
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from harness.host import raise_nofile_limit
from harness.machine import SATURATED_PERCENT  # the generator-health thresholds live together
from harness.results.cells import GeneratorStats
from harness.results.histogram_file import LoadSettings
from harness.target import parse_host
from harness.user.alarm import make_alarm, sleeper
from harness.user.dispatch import Dispatcher
from harness.user.generator_health import CpuMonitor, LoopLagProbe
from harness.user.options import DEFAULT_HOST, add_arguments, scenario_options
from harness.user.recorder import Recorder, WorkerRecorder
from harness.user.source_addresses import SourcePool, auto_count
from harness.user.steady import ESTABLISHED_MESSAGE, STOP_AT_MESSAGE, Steady, phase_options, record_unanswered
from harness.user.steady import add_arguments as add_phase_arguments
from harness.user.watchdog import Watchdog

LOG = logging.getLogger("swarmbench")

#: Between two steps of the once-a-second flush: long enough to be a timer (the loop polls sockets).
FLUSH_PAUSE = 0.0001
#: A worker flushes its open second this often (in steps), so a report's own flush is small.
WORKER_FLUSH_PERIOD = 0.1
#: A message in flight longer than this when the run stops counts as unanswered.
STALLED_S = 1.0


class Role(enum.Enum):
    """What this Locust process is; it decides where recordings go and who writes the file."""

    LOCAL = "local"
    MASTER = "master"
    WORKER = "worker"

    @classmethod
    def of(cls, runner: Any) -> Role:
        if isinstance(runner, MasterRunner):
            return cls.MASTER
        if isinstance(runner, WorkerRunner):
            return cls.WORKER
        return cls.LOCAL

    @property
    def runs_users(self) -> bool:
        return self is not Role.MASTER


class Run:
    """One test run in this process (a new one at each test_start)."""

    def __init__(self, environment: Any, role: Role) -> None:
        self.environment = environment
        self.role = role
        self.recorder: Recorder = WorkerRecorder() if role is Role.WORKER else Recorder()
        self.watchdog = Watchdog()
        self.pools: dict[str, SourcePool] = {}
        self.leaving = 0  # abrupt leaves so far: close and reset alternate over the process
        self.started_at = time.time()
        self.spawned_at: float | None = None
        self.stopping_at: float | None = None
        self.ended_at: float | None = None
        self.users = 0
        self.cpu = CpuMonitor(role.value, self._local_users)
        self.remote_cpu: dict[str, dict[str, Any]] = {}
        # the master runs no users: its idle loop would only dilute the workers' lag
        self.alarm = make_alarm() if role.runs_users else None  # the open loop's and the probe's wake-ups
        self.lag = LoopLagProbe(self.recorder.buffer("loop_lag").append, sleeper(self.alarm)) if role.runs_users else None
        self.dispatcher = Dispatcher(self.alarm) if role.runs_users else None  # the open loop's sends
        self.rotator = gevent.spawn(self._rotate)
        self.stopped = False
        self.unanswered_recorded = False
        self.steady = Steady(self)

    def _local_users(self) -> int:
        runner = getattr(self.environment, "runner", None)
        return int(runner.user_count) if self.role.runs_users and runner is not None else 0

    def source_pool(self, target: str, count: int, connections: int) -> SourcePool:
        """This run's pool for ``target``: ``count`` addresses, or automatic when ``count`` is 0."""
        pool = self.pools.get(target)
        if pool is None:
            auto = count <= 0
            pool = self.pools[target] = SourcePool(target, auto_count(connections) if auto else count, auto)
        return pool

    def _rotate(self) -> None:
        """Close each wall-clock second's buffers just after the second ends, in short steps.

        A positive sleep between steps, not sleep(0): gevent runs sleep(0)
        callbacks back to back for up to its switch interval (5 ms) without
        polling sockets, so only a timer lets waiting users' replies in.
        """
        worker = self.role is Role.WORKER
        while True:
            now = time.time()
            next_second = math.floor(now) + 1.0005
            if worker and next_second - now > WORKER_FLUSH_PERIOD:
                # a worker also flushes within the second, so that a report's own flush is small
                gevent.sleep(WORKER_FLUSH_PERIOD)
                for _ in self.recorder.flush_steps():
                    gevent.sleep(FLUSH_PAUSE)
                continue
            gevent.sleep(next_second - now)
            for _ in self.recorder.flush_steps(int(time.time())):
                gevent.sleep(FLUSH_PAUSE)

    def mark_stopping(self) -> None:
        if self.stopping_at is None:
            self.stopping_at = self.cpu.steady_until = time.time()
            self.steady.snapshot()
            record_unanswered(self.watchdog.clients, self.recorder.buffer("unanswered").append, STALLED_S)
            self.unanswered_recorded = True

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.steady.kill()
        self.rotator.kill(block=False)  # between steps: flush() below finishes its work
        self.watchdog.stop()
        if self.lag is not None:
            self.lag.stop()
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.alarm is not None:
            self.alarm.close()
        self.cpu.stop()
        self.recorder.flush()
        self.ended_at = time.time()
        if self.stopping_at is None:
            self.stopping_at = self.ended_at

    def achieved_rate(self) -> float:
        """Messages per second over the whole seconds between 'all users spawned' and 'stopping'."""
        per_second = self.recorder.per_second.get("message", {})
        start = self.spawned_at or self.started_at
        end = self.stopping_at or self.ended_at or time.time()
        first, last = math.ceil(start), math.floor(end)
        if last - first >= 1:
            return sum(per_second.get(t, 0) for t in range(first, last)) / (last - first)
        return self.recorder.count("message") / max(end - self.started_at, 1e-9)

    def generator(self) -> GeneratorStats:
        """Every process's health (this one and each worker's last report) and the saturated mark."""
        processes = [self.cpu.summary(), *self.remote_cpu.values()]
        steady = [p["cpu_percent_max_steady"] for p in processes if p.get("cpu_percent_max_steady") is not None]
        whole = max((p["cpu_percent_max"] for p in processes), default=0.0)
        peak = max(steady) if steady else whole
        return GeneratorStats(
            cpu_percent_max=peak,
            saturated=peak > SATURATED_PERCENT,
            processes=tuple(processes),
            cpu_percent_max_all=whole,
            rss_bytes_total=sum(p.get("rss_bytes_max", 0) for p in processes),
            users_max=sum(p.get("users_max", 0) for p in processes),
        )

    def write(self, path: Path) -> None:
        opts = scenario_options(self.environment.parsed_options)
        settings = LoadSettings(
            users=self.users, rate=opts.rate, messages_per_session=opts.messages_per_session,
            message_size=opts.message_size, think_time=opts.think_time, achieved_rate=round(self.achieved_rate(), 2),
        )  # fmt: skip
        model = self.recorder.to_file(
            started_at=self.started_at, ended_at=self.ended_at or time.time(), spawned_at=self.spawned_at,
            stopping_at=self.stopping_at, options=settings, generator=self.generator(),
        )  # fmt: skip
        steady = self.steady
        model = replace(
            model, established_at=steady.established_at, measure_from=steady.measure_from,
            users_established=steady.total_at_stop(), users_not_established=steady.not_established(),
            establish_timeout=steady.timeout, settle_s=steady.settle, window_planned_s=steady.window or None,
            workers_missing_final=steady.missing_final,
        )  # fmt: skip
        self.recorder.write(path, model)


class Plugin:
    """Swarmbench's state in one Locust process: its role and the current run."""

    def __init__(self, environment: Any, role: Role) -> None:
        self.environment = environment
        self.role = role
        self.run: Run | None = None
        ev = environment.events
        ev.test_start.add_listener(self.on_test_start)
        ev.spawning_complete.add_listener(self.on_spawning_complete)
        ev.test_stopping.add_listener(self.on_test_stopping)
        ev.test_stop.add_listener(self.on_test_stop)
        if role is Role.WORKER:
            ev.report_to_master.add_listener(self.on_report_to_master)
        if role is Role.MASTER:
            ev.worker_report.add_listener(self.on_worker_report)
        runner = getattr(environment, "runner", None)
        if runner is not None and role is Role.MASTER:
            runner.register_message(ESTABLISHED_MESSAGE, self.on_established_message)
        elif runner is not None and role is Role.WORKER:
            runner.register_message(STOP_AT_MESSAGE, self.on_stop_at_message)

    def current_run(self) -> Run:
        """The run users record into (one is made when Locust is driven without test_start)."""
        if self.run is None:
            self.run = Run(self.environment, self.role)
        return self.run

    def total_users(self) -> int:
        """All users of the test, over every worker (workers learn it from the master's options)."""
        runner = self.environment.runner
        if self.role is Role.WORKER:
            return int(getattr(self.environment.parsed_options, "swarmbench_users", 0) or runner.target_user_count or 1)
        return int(getattr(runner, "target_user_count", 0) or 1)

    # -- listeners ------------------------------------------------------------------------
    def on_test_start(self, environment: Any, **_kw: Any) -> None:
        if self.run is not None:
            self.run.stop()
        run = self.run = Run(environment, self.role)
        run.users = self.total_users()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self.role is Role.LOCAL and run.users + 256 > soft:
            LOG.warning("Swarmbench: %d users but only %d file descriptors (ulimit -n): connects will fail "
                        "with EMFILE; raise the hard limit or use --processes", run.users, soft)
        if self.role is Role.MASTER and environment.parsed_options is not None:
            # a custom option travels to the workers with every spawn message
            environment.parsed_options.swarmbench_users = environment.runner.target_user_count
        run.steady.start()

    def on_spawning_complete(self, user_count: int = 0, **_kw: Any) -> None:
        run = self.run
        if run is not None and run.spawned_at is None:
            run.spawned_at = run.cpu.steady_from = time.time()
            run.users = max(run.users, int(user_count or 0))

    def on_test_stopping(self, **_kw: Any) -> None:
        if self.run is not None:
            self.run.mark_stopping()
            if self.role is Role.MASTER:  # Locust's quit does not stop workers before its last 0.5 s
                self.run.steady.announce_stop(time.time())

    def on_established_message(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        if self.run is not None and msg is not None and isinstance(msg.data, dict):
            self.run.steady.on_remote_count(str(msg.node_id), int(msg.data.get("count", 0)))

    def on_stop_at_message(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        if self.run is not None and msg is not None and isinstance(msg.data, dict):
            self.run.steady.on_stop_at(float(msg.data["stop_at"]))

    def on_test_stop(self, **_kw: Any) -> None:
        if self.run is None:
            return
        if self.role is Role.MASTER:
            self.run.steady.await_finals()  # before Locust sends "quit": every worker's last report
        self.run.stop()
        if self.role is Role.WORKER:
            # the last recordings go at once, not at the next periodic report (up to 3 s later)
            send = getattr(self.environment.runner, "_send_stats", None)
            if send is not None:
                gevent.spawn(send)
        if self.role is Role.LOCAL:
            self.write(final=True)
        elif self.role is Role.MASTER:
            self.write(final=False)  # again at quitting, with the workers' final reports

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        run = self.run
        if run is not None and isinstance(run.recorder, WorkerRecorder):
            data["swarmbench"] = {
                "report": run.recorder.take_report(), "cpu": run.cpu.summary(),
                "established": run.steady.established if run.steady.at_stop is None else run.steady.at_stop,
                "final": run.stopped,  # everything this worker will record is in this report
            }  # fmt: skip

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        run = self.run
        payload = data.get("swarmbench")
        if run is None or not payload:
            return
        run.recorder.merge_report(payload["report"])
        run.remote_cpu[client_id] = payload["cpu"]
        run.steady.on_remote_count(client_id, int(payload.get("established", 0)))
        if payload.get("final"):
            run.steady.on_final_count(client_id, int(payload.get("established", 0)))
            run.steady.finals.add(client_id)

        if run.stopped and run.recorder.changed:
            self.write(final=False)  # a late report (after the master stopped): keep the file whole

    def on_quitting(self) -> None:
        if self.run is not None and self.role is Role.MASTER:
            self.run.stop()
            self.write(final=True)

    # -- the file ---------------------------------------------------------------------------
    def write(self, final: bool) -> None:
        run = self.run
        if run is None:
            return
        run.recorder.flush()
        parsed = self.environment.parsed_options
        path = getattr(parsed, "hdr_file", "") if parsed is not None else ""
        if path:
            run.write(Path(path))
        run.recorder.changed = False
        if final:
            log_summary(run, path)


def log_summary(run: Run, path: str) -> None:
    opts = scenario_options(run.environment.parsed_options)
    if opts.rate:
        LOG.info("Swarmbench: achieved %.1f messages/s (asked %.1f/s)", run.achieved_rate(), opts.rate)
    for name, hist in sorted(run.recorder.totals.items()):
        count = hist.get_total_count()
        if count:
            p = hist.get_percentile_to_value_dict([50.0, 99.0, 99.9])
            LOG.info(
                "Swarmbench %-20s n=%d p50=%dus p99=%dus p99.9=%dus max=%dus",
                name, count, p[50.0], p[99.0], p[99.9], hist.get_max_value(),
            )  # fmt: skip
    generator = run.generator()
    if generator.saturated:
        LOG.warning(
            "Swarmbench: generator saturated (a process peaked at %.0f%% of a core): "
            "the figures describe the generator, not the server",
            generator.cpu_percent_max,
        )
    if path:
        LOG.info("Swarmbench: histograms written to %s", path)


def plugin_of(environment: Any) -> Plugin:
    """The environment's plugin (made here when Locust's ``init`` event was never fired, as in tests)."""
    plugin = getattr(environment, "swarmbench", None)
    if plugin is None:
        plugin = environment.swarmbench = Plugin(environment, Role.of(getattr(environment, "runner", None)))
    return plugin


def fail(message: str) -> None:
    """A one-line error and exit 1 (never a traceback) for a bad command line."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


events.init_command_line_parser.add_listener(add_arguments)
events.init_command_line_parser.add_listener(add_phase_arguments)


@events.init.add_listener
def _on_init(environment: Any, runner: Any = None, **_kw: Any) -> None:
    environment.swarmbench = Plugin(environment, Role.of(runner))
    raise_nofile_limit()  # Locust raises it only to 10,000: not enough for 10,000 users and the rest
    if isinstance(runner, WorkerRunner) or environment.parsed_options is None:
        return
    try:
        scenario_options(environment.parsed_options)
        phase_options(environment.parsed_options)
        hosts = {environment.host} if environment.host else {u.host for u in environment.user_classes}
        for host in hosts:
            parse_host(host or DEFAULT_HOST)
    except ValueError as exc:
        fail(str(exc))
    hdr = environment.parsed_options.hdr_file
    if hdr and Path(hdr).is_dir():
        fail(f"--hdr-file {hdr}: is a directory")


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kw: Any) -> None:
    # Registered at import, before the runner's own listener: quitting fires with reverse=True,
    # so this runs after the master has sent "quit" and waited for the workers' final reports
    # (a local runner writes at test_stop, which on Ctrl-C comes after this).
    plugin = getattr(environment, "swarmbench", None)
    if plugin is not None:
        plugin.on_quitting()
