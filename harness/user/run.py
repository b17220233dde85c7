"""One test run in one Locust process: what it records, what watches it, and the file it leaves.

Locust keeps per-run state on its runner; Swarmbench keeps it here, one
:class:`Run` per ``test_start``, made by the process's plugin
(:mod:`harness.user.plugin`), which decides everything that depends on the
process's role and hands it in: the recorder's kind, whether users run here
(the open loop's alarm and send timer, the loop-lag probe), how often the
recordings are flushed, and the phases' class. The run owns the recorder, the
watchdog, the source-address pools, the CPU monitor, the loop-lag probe and the
phases (:mod:`harness.user.phases`), and reads what the phases found through
their :class:`~harness.user.phases.PhaseResult`, never their fields.

Clients see a run through :class:`harness.user.client.ClientRun`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Generic, TypeVar

import gevent

from harness.machine import SATURATED_PERCENT  # the generator-health thresholds live together
from harness.results.cells import GeneratorStats
from harness.census import CENSORED, censored_waits
from harness.results.histogram_file import LoadSettings
from harness.user.alarm import make_alarm, sleeper
from harness.user.generator_health import CpuMonitor, LoopLagProbe
from harness.user.options import scenario_options
from harness.user.phases import Phases, phase_options, record_unanswered
from harness.user.recorder import Recorder
from harness.user.send_timer import SendTimer
from harness.user.source_addresses import SourcePool, auto_count
from harness.user.watchdog import Watchdog

LOG = logging.getLogger("swarmbench")
P = TypeVar("P", bound=Phases)

#: Between two steps of the once-a-second flush: long enough to be a timer (the loop polls sockets).
FLUSH_PAUSE = 0.0001
#: A message in flight longer than this when the run stops counts as unanswered, and its user as stuck
#: at the window's end (its due messages then enter the window's figures: harness.census).
STALLED_S = 1.0


class Run(Generic[P]):
    """One test run in this process (a new one at each test_start), with its role's phases ``P``.

    ``label``: the process's role as the file names it; ``runs_users``: False on
    a master (no alarm, probe or send timer: its idle loop would only dilute the
    workers' lag); ``flush_period``: also flush this often within each second (a
    worker, so that a report's own flush is small), None: once a second.
    """

    def __init__(self, environment: Any, *, label: str, recorder: Recorder, phases: type[P], users: int = 0,
                 runs_users: bool = True, flush_period: float | None = None) -> None:
        self.environment = environment
        self.recorder = recorder
        self.runs_users = runs_users
        self.flush_period = flush_period
        self.watchdog = Watchdog(STALLED_S)
        self.pools: dict[str, SourcePool] = {}
        self.leaving = 0  # abrupt leaves so far: close and reset alternate over the process
        self.started_at = time.time()
        self.spawned_at: float | None = None
        self.stopping_at: float | None = None
        self.ended_at: float | None = None
        self.users = users
        self.cpu = CpuMonitor(label, self._local_users)
        self.remote_cpu: dict[str, dict[str, Any]] = {}  # a master's: each worker's last CPU summary
        self.remote_stalled: dict[str, int] = {}  # a master's: each worker's users waiting > STALLED_S, last report
        self.alarm = make_alarm() if runs_users else None  # the open loop's and the probe's wake-ups
        self.lag = LoopLagProbe(recorder.buffer("loop_lag").append, sleeper(self.alarm)) if runs_users else None
        self.send_timer = SendTimer(self.alarm) if runs_users else None  # the open loop's sends
        self.rotator = gevent.spawn(self._rotate)
        self.stopped = False
        self.unanswered_recorded = False
        self.unanswered_at_stop = 0
        self.censused = False
        runner = getattr(environment, "runner", None)
        self.phases: P = phases(phase_options(environment.parsed_options), runner, users, self.started_at,
                             self.mark_stopping)

    def _local_users(self) -> int:
        runner = getattr(self.environment, "runner", None)
        return int(runner.user_count) if self.runs_users and runner is not None else 0

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

        The cut is made whenever the clock is past the recorder's second, not
        only after the sleep aimed at the boundary: a worker also flushes every
        ``flush_period``, and on a starved machine those sleeps can step over the
        boundary's last tenth of a second again and again (once, every value of
        three seconds went into one, and its master's window found none).
        """
        period = self.flush_period
        while True:
            now = time.time()
            second = int(now)
            if second > self.recorder.second:
                end = self.phases.window_end()
                if end is not None and second >= end:  # in the same turn as the cut of the window's last second
                    self.census(end)
                for _ in self.recorder.flush_steps(second):
                    gevent.sleep(FLUSH_PAUSE)
                continue
            wait = second + 1.0005 - now
            if period is not None and wait > period:
                gevent.sleep(period)
                for _ in self.recorder.flush_steps():
                    gevent.sleep(FLUSH_PAUSE)
            else:
                gevent.sleep(wait)

    def spawned(self, user_count: int) -> None:
        """Every user spawned (Locust's ``spawning_complete``): the CPU's steady stretch starts."""
        if self.spawned_at is None:
            self.spawned_at = self.cpu.steady_from = time.time()
            self.users = max(self.users, int(user_count or 0))
            self.phases.expect(self.users)

    def census(self, end: float) -> None:
        """Once: this process's messages due by ``end`` (wall clock) with no reply yet (see harness.census)."""
        if self.censused or not self.runs_users:
            return
        self.censused = True
        now, now_ns = time.time(), perf_counter_ns()
        end = min(end, now)
        start = self.phases.window_start(end)

        def ns(t: float) -> int:
            return now_ns - int((now - t) * 1e9)

        stuck = int(STALLED_S * 1e9)
        self.recorder.record_counts(CENSORED, censored_waits(self.watchdog.clients, now_ns, ns(start), ns(end), stuck))

    def mark_stopping(self) -> None:
        if self.stopping_at is None:
            self.stopping_at = self.cpu.steady_until = time.time()
            self.census(self.phases.window_end() or self.stopping_at)  # stopped before the window's end, or no window
            self.phases.snapshot()
            waits: list[int] = []
            record_unanswered(self.watchdog.clients, waits.append, STALLED_S)
            self.recorder.buffer("unanswered").extend(waits)
            self.unanswered_at_stop = len(waits)
            self.unanswered_recorded = True

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.phases.close()
        self.rotator.kill(block=False)  # between steps: flush() below finishes its work
        self.watchdog.stop()
        if self.lag is not None:
            self.lag.stop()
        if self.send_timer is not None:
            self.send_timer.close()
        if self.alarm is not None:
            self.alarm.close()
        self.cpu.stop()
        self.recorder.flush()
        self.ended_at = time.time()
        if self.stopping_at is None:
            self.stopping_at = self.ended_at

    def stalled_now(self) -> int:
        """Users waiting longer than ``STALLED_S`` for a reply (this process's as of the watchdog's last pass
        and, on a master, its workers' as of their last reports)."""
        return self.watchdog.stalled + sum(self.remote_stalled.values())

    def unanswered(self) -> int:
        """The users left unanswered: counted as the run began to stop, else those stalled now."""
        if not self.unanswered_recorded:
            return self.stalled_now()
        return max(self.unanswered_at_stop, self.recorder.count("unanswered"))  # a master's: its workers', merged

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
        found = self.phases.result()
        model = replace(
            model, established_at=found.established_at, measure_from=found.measure_from,
            users_established=found.users_established, users_not_established=found.users_not_established,
            establish_timeout=found.establish_timeout, settle_s=found.settle_s,
            window_planned_s=found.window_planned_s, workers_missing_final=found.workers_missing_final,
        )  # fmt: skip
        self.recorder.write(path, model)

    def log_summary(self, path: str) -> None:
        """The run's figures in Locust's log (the file, when written, has them all)."""
        opts = scenario_options(self.environment.parsed_options)
        if opts.rate:
            LOG.info("Swarmbench: achieved %.1f messages/s (asked %.1f/s)", self.achieved_rate(), opts.rate)
        for name, hist in sorted(self.recorder.totals.items()):
            count = hist.get_total_count()
            if count:
                p = hist.get_percentile_to_value_dict([50.0, 99.0, 99.9])
                LOG.info(
                    "Swarmbench %-20s n=%d p50=%dus p99=%dus p99.9=%dus max=%dus",
                    name, count, p[50.0], p[99.0], p[99.9], hist.get_max_value(),
                )  # fmt: skip
        generator = self.generator()
        if generator.saturated:
            LOG.warning(
                "Swarmbench: generator saturated (a process peaked at %.0f%% of a core): "
                "the figures describe the generator, not the server",
                generator.cpu_percent_max,
            )
        if path:
            LOG.info("Swarmbench: histograms written to %s", path)
