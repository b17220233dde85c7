"""Generator health: each Locust process's CPU, memory and event-loop lag, so a run can say when it measured itself.

Imported by :mod:`harness.user.run`; every process (local, master, each
worker) keeps one CPU monitor, and workers ship its summary to the master.
Each process that runs users also keeps a :class:`LoopLagProbe`.
"""

from __future__ import annotations

import math
import os
import resource
import socket
import time
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

import gevent
import psutil


class CpuMonitor:
    """This process's CPU and memory, sampled once a second (the first second is dropped).

    Saturation is judged between spawning-complete and stopping (``steady_from``,
    ``steady_until``): spawning or stopping thousands of users at once peaks
    outside the window any figure uses.
    """

    def __init__(self, role: str, users: Callable[[], int] = lambda: 0) -> None:
        self.role = role
        self.users = users
        self.process = psutil.Process()
        self.samples: list[tuple[float, float]] = []  # (time.time() at the end of the second, % of a core)
        self.rss_max = 0
        self.rss_now: int | None = None
        self.users_max = 0
        self.steady_from: float | None = None
        self.steady_until = math.inf
        self.cpu_start = self._cpu()
        self.cpu_seconds = 0.0
        self.greenlet = gevent.spawn(self._run)

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def _run(self) -> None:
        process = self.process
        process.cpu_percent(None)
        gevent.sleep(1.0)
        process.cpu_percent(None)  # the first second (start-up, spawning) is ignored
        while True:
            gevent.sleep(1.0)
            with process.oneshot():
                self.samples.append((time.time(), process.cpu_percent(None)))
                self.rss_now = process.memory_info().rss
                self.rss_max = max(self.rss_max, self.rss_now)
            self.users_max = max(self.users_max, self.users())

    def stop(self) -> None:
        self.greenlet.kill(block=False)
        self.cpu_seconds = self._cpu() - self.cpu_start

    def summary(self) -> dict[str, Any]:
        values = [p for _, p in self.samples]
        steady_from, until = self.steady_from, self.steady_until
        steady = [p for t, p in self.samples if steady_from is not None and steady_from + 1.0 <= t <= until]
        if self.greenlet.dead is False:
            self.cpu_seconds = self._cpu() - self.cpu_start
        return {
            "role": self.role,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cpu_percent_mean": round(sum(values) / len(values), 1) if values else 0.0,
            "cpu_percent_max": round(max(values), 1) if values else 0.0,
            "cpu_percent_max_steady": round(max(steady), 1) if steady else None,
            "cpu_percent_now": self.samples[-1][1] if self.samples else None,  # the last second's (live view)
            "cpu_seconds": round(self.cpu_seconds, 4),
            "samples": len(values),
            "users_max": self.users_max,
            "rss_bytes_max": self.rss_max,
            "rss_bytes_now": self.rss_now,
            "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }


#: The probe's period. 2 ms: 500 samples a second (5,000 in a 10 s window, so p99 rests on 50 of them)
#: for about 1% of a core when idle (measured here: 1 ms cost 1.4%, 2 ms 1.0%, 10 ms 0.3%; a
#: busy loop wakes it for less). Node's monitorEventLoopDelay samples every 10 ms by default.
LOOP_LAG_INTERVAL = 0.002


class LoopLagProbe:
    """How late this process's gevent hub runs a greenlet that is due: the generator's own delay.

    Like Node's ``monitorEventLoopDelay``: a greenlet sleeps ``interval`` and
    appends how much later than asked it woke (µs, at least 0) to ``record``.
    It sleeps on :mod:`harness.user.alarm` (a timerfd the hub polls like a
    socket), not on a libev timer: those wait whole milliseconds when the loop
    is idle, and the probe would report that rounding as lag. A due wake-up
    waits in the same loop iteration, behind the same ready greenlets, as a user
    whose reply has arrived, so this is the share of a ``message`` latency that
    the generator itself adds. Idle, it reads the OS's wake-up latency (tens of
    µs); a saturated hub or anything that holds it (a long flush) shows directly.
    When an open loop's sends use up the alarm's expiries (``EXPIRIES_PER_S``), an
    idle stretch adds up to 0.5 ms, as it does to those sends.
    """

    def __init__(self, record: Callable[[int], Any], sleep_until: Callable[[int], Any],
                 interval: float = LOOP_LAG_INTERVAL) -> None:
        self.record = record
        self.sleep_until = sleep_until  # harness.user.alarm's: gevent.sleep would add libev's ms rounding
        self.interval = interval
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        interval_ns, record, sleep_until, clock = int(self.interval * 1e9), self.record, self.sleep_until, perf_counter_ns
        while True:
            due = clock() + interval_ns
            sleep_until(due)
            late = clock() - due
            record(late // 1000 if late > 0 else 0)

    def stop(self) -> None:
        self.greenlet.kill(block=False)
