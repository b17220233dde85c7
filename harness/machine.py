"""The whole machine's CPU, per core and per second, and the generator-health thresholds.

A Locust process's own CPU says when it is saturated, not when it is starved:
on 2 cores shared with the server, a generator waiting for a core shows *less*
CPU while its scheduling delay lands in ``message``. So each cell also records
the machine's CPU (busy and idle, per core: ``psutil.cpu_times_percent``) once
a second, and :func:`generator_bound` marks a cell whose figures describe the
generator, naming the figure that decided it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from harness.results import Latency, MachineStats
from harness.results.cells import LAG_BOUND

# -- thresholds, in one place, each with its reason ---------------------------------------------
#: Mean idle of the whole machine over the window at or below this (% of all cores): nothing was
#: left for the generator to run on when it was due, so its delays are in every latency.
NO_IDLE_PERCENT = 2.0
#: The generator's own loop lag p99 at or above this share of the message p99: a third or more of
#: what the figure says is the generator's time, not the server's.
LOOP_LAG_SHARE = 1 / 3
#: ... and only when the lag itself is large enough to matter (the idle OS wake-up is ~50-100 µs).
LOOP_LAG_FLOOR_US = 1000.0
#: One Locust process above this share of one core is saturated (as ``harness.user.run`` judges).
SATURATED_PERCENT = 90.0


@dataclass(frozen=True, slots=True)
class MachineSample:
    t: float  # time.time() at the end of the second
    busy: tuple[float, ...]  # per core, % of the second not idle (iowait counts as idle)


class MachineSampler:
    """Per-core CPU once a second in a background thread (psutil's per-call deltas)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[MachineSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MachineSampler:
        psutil.cpu_times_percent(interval=None, percpu=True)  # the baseline for the first delta
        self._thread = threading.Thread(target=self._run, name="machine-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            per_core = psutil.cpu_times_percent(interval=None, percpu=True)
            busy = tuple(round(max(0.0, 100.0 - c.idle - getattr(c, "iowait", 0.0)), 1) for c in per_core)
            self.samples.append(MachineSample(time.time(), busy))

    def stop(self) -> list[MachineSample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return list(self.samples)


def summarize_machine(samples: Sequence[MachineSample], t0: float, t1: float) -> MachineStats | None:
    """The window's machine CPU (samples whose second ends in ``(t0, t1]``); None when there were none."""
    window = [s for s in samples if t0 < s.t <= t1 + 0.5]
    if not window:
        return None
    cores = len(window[0].busy)
    per_core = tuple(round(sum(s.busy[i] for s in window if len(s.busy) > i) / len(window), 1) for i in range(cores))
    means = [sum(s.busy) / len(s.busy) for s in window if s.busy]
    return MachineStats(
        cores=cores,
        busy_percent_mean=round(sum(means) / len(means), 1) if means else None,
        idle_percent_min=round(100.0 - max(means), 1) if means else None,
        per_core_busy_mean=per_core,
        samples=len(window),
    )


def generator_bound(
    machine: MachineStats | None, loop_lag: Latency | None, message: Latency | None, process_cpu_max: float
) -> str | None:
    """Why the cell's figures describe the generator (with the deciding figure), or None."""
    idle = None if machine is None or machine.busy_percent_mean is None else 100.0 - machine.busy_percent_mean
    return bound_reason(process_cpu_max, idle, loop_lag.p99_us if loop_lag is not None else None,
                        message.p99_us if message is not None else None)  # fmt: skip


def bound_reason(
    process_cpu_max: float, idle_percent: float | None, lag_p99_us: float | None, message_p99_us: float | None
) -> str | None:
    """:func:`generator_bound` over plain figures (the live view's, harness.live): the same rules, the same words."""
    if process_cpu_max > SATURATED_PERCENT:
        return f"a Locust process used {process_cpu_max:.0f}% of a core (over {SATURATED_PERCENT:.0f}%)"
    if idle_percent is not None and idle_percent <= NO_IDLE_PERCENT:
        return f"the machine had {idle_percent:.1f}% idle CPU over the window"
    if (lag_p99_us is not None and message_p99_us and lag_p99_us >= LOOP_LAG_FLOOR_US
            and lag_p99_us >= LOOP_LAG_SHARE * message_p99_us):
        return (f"{LAG_BOUND} p99 {lag_p99_us / 1000:.2f} ms is "
                f"{lag_p99_us / message_p99_us:.0%} of message p99 {message_p99_us / 1000:.2f} ms")
    return None
