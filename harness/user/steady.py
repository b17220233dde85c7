"""Establish, then measure: a run's window starts once every user has connected and had its first reply.

Why: behind ``listen(6)`` users connect through SYN retries and syncookies over
several seconds; a fixed warm-up ends inside that ramp and the figures then
describe the ramp, not the server. So a run has three phases:

1. the ramp: users spawn, connect and get their first reply. It is bounded by
   ``--establish-timeout`` (a design that never answers some users costs that
   deadline, not the 35 s connect timeout);
2. the settle (``--swarmbench-settle``): a few seconds after the last user's
   first reply (or after the deadline), still not measured;
3. the window (``--swarmbench-window``): whole wall-clock seconds from the end
   of the settle. With a window, the plugin ends the run itself when it is over
   (Locust's ``-t`` stays as an upper bound), so the seconds measured are the
   seconds asked for, whenever establishment came.

How the run ends, and why so: a local runner just quits. Distributed, the
master broadcasts the planned end (``swarmbench_stop_at``) to its workers;
each worker stops its own users at that instant (``runner.stop()``: users run
``on_stop``, which records who was left unanswered) and sends its final report
(marked ``final``) at once. When Locust's ``-t`` ends the run instead, the
master announces the end "now" as it begins to stop. Either way the master waits (bounded by ``FINAL_REPORT_WAIT``)
for every worker's final report before it calls ``runner.quit()``: Locust's
own quit waits only 0.5 s after sending "quit", while a worker's users may take
up to their quit timeout (2 s) to stop, so their last seconds were lost. A
worker whose final report never came is named in the file. Sending Locust's own
"stop" message instead would make the master forget the worker
("client_stopped"), which breaks the quit.

Workers count their established users and tell the master within
``COUNT_DELAY`` (a custom message, not the 3 s stats report).

Imports gevent; the plugin owns one :class:`Steady` per run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import gevent

if TYPE_CHECKING:
    from harness.user.plugin import Run

LOG = logging.getLogger("swarmbench")

#: Default bound on the ramp (seconds from the run's start to the last user's first reply).
DEFAULT_ESTABLISH_TIMEOUT = 30.0
#: A worker sends its established count at most this often (the master starts the settle on it).
COUNT_DELAY = 0.05
#: How often the master (or a local runner) checks for establishment or the deadline.
POLL = 0.05
#: Past the window's last whole second: its interval is closed (the rotation runs at +0.5 ms).
STOP_MARGIN = 0.02
#: How long the master waits for every worker's final report after the planned end.
FINAL_REPORT_WAIT = 15.0

ESTABLISHED_MESSAGE = "swarmbench_established"
STOP_AT_MESSAGE = "swarmbench_stop_at"


def add_arguments(parser: Any, **_kw: Any) -> None:
    """Locust's ``init_command_line_parser`` listener: the phase options."""
    add = parser.add_argument
    add("--establish-timeout", type=float, default=DEFAULT_ESTABLISH_TIMEOUT, include_in_web_ui=False,
        env_var="SWARMBENCH_ESTABLISH_TIMEOUT",
        help="seconds from the start for every user to connect and get its first reply; the window "
             "starts after that or at this deadline (default 30)")
    add("--swarmbench-settle", type=float, default=0.0, include_in_web_ui=False,
        help="seconds after every user is established before the window starts (default 0)")
    add("--swarmbench-window", type=float, default=0.0, include_in_web_ui=False,
        help="seconds measured after the settle; then the run ends (default 0: Locust's -t ends it)")  # fmt: skip


def phase_options(parsed: Any) -> tuple[float, float, float]:
    """(establish timeout, settle, window) in seconds; a one-line ValueError when one is wrong."""
    timeout = float(getattr(parsed, "establish_timeout", DEFAULT_ESTABLISH_TIMEOUT) or DEFAULT_ESTABLISH_TIMEOUT)
    settle = float(getattr(parsed, "swarmbench_settle", 0.0) or 0.0)
    window = float(getattr(parsed, "swarmbench_window", 0.0) or 0.0)
    if not 0 < timeout < 3600:
        raise ValueError(f"--establish-timeout must be seconds in (0, 3600) (got {timeout})")
    if not 0 <= settle < 3600 or not 0 <= window < 86400:
        raise ValueError(f"--swarmbench-settle and --swarmbench-window must be seconds >= 0 (got {settle}, {window})")
    return timeout, settle, window


class Steady:
    """One run's establishment and phases, in any role (see the module docstring)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.established = 0  # users of this process that had their first reply
        self.remote: dict[str, int] = {}  # master: each worker's count
        self.remote_at_stop: dict[str, int] = {}  # master: each worker's count as it began to stop
        self.at_stop: int | None = None  # this process's count as the run began to stop
        self.established_at: float | None = None
        self.measure_from: float | None = None
        self.stop_at: float | None = None
        self.finals: set[str] = set()  # master: workers whose final report arrived
        self.missing_final: tuple[str, ...] = ()
        self.timeout, self.settle, self.window = phase_options(run.environment.parsed_options)
        self._count_sender: Any = None
        self.greenlet: Any = None
        self.stopper: Any = None
        self.awaited = False

    # -- counting ----------------------------------------------------------------------------
    def user_established(self) -> None:
        """A user of this process had its first reply (called once per user)."""
        self.established += 1
        if self.run.role.value == "worker":
            if self._count_sender is None:
                self._count_sender = gevent.spawn_later(COUNT_DELAY, self._send_count)
        else:
            self._check()

    def _send_count(self) -> None:
        self._count_sender = None
        runner = getattr(self.run.environment, "runner", None)
        if runner is not None and not self.run.stopped:
            try:
                runner.send_message(ESTABLISHED_MESSAGE, {"count": self.established})
            except Exception as exc:  # a lost count only delays the window to the deadline
                LOG.warning("Swarmbench: could not send the established count: %s", exc)

    def on_remote_count(self, client_id: str, count: int) -> None:
        self.remote[client_id] = max(count, self.remote.get(client_id, 0))
        self._check()

    def total(self) -> int:
        return self.established + sum(self.remote.values())

    def _check(self) -> None:
        if self.established_at is None and self.total() >= self.run.users > 0:
            self.established_at = time.time()

    def snapshot(self) -> None:
        """As the run begins to stop, before stopping users drains a server's queue (answering some)."""
        if self.at_stop is None:
            self.at_stop = self.established

    def on_final_count(self, client_id: str, count: int) -> None:
        self.remote_at_stop[client_id] = count

    def total_at_stop(self) -> int:
        local = self.established if self.at_stop is None else self.at_stop
        return local + sum({**self.remote, **self.remote_at_stop}.values())

    def not_established(self) -> int:
        """Users with no reply yet as the run began to stop."""
        return max(0, self.run.users - self.total_at_stop())

    # -- the phases (local runner and master) -------------------------------------------------
    def start(self) -> None:
        """Watch for establishment or the deadline; with a window, end the run when it is over."""
        if self.run.role.value != "worker" and self.greenlet is None:
            self.greenlet = gevent.spawn(self._phases)

    def _phases(self) -> None:
        deadline = self.run.started_at + self.timeout
        while self.established_at is None and time.time() < deadline:
            gevent.sleep(POLL)
        begin = self.established_at if self.established_at is not None else deadline
        if self.established_at is None:
            LOG.warning("Swarmbench: %d of %d users not established within %g s; measuring from the deadline",
                        self.not_established(), self.run.users, self.timeout)
        self.measure_from = begin + self.settle
        if self.window <= 0:
            return
        stop_at = math.ceil(self.measure_from) + self.window + STOP_MARGIN
        runner = self.run.environment.runner
        self.announce_stop(stop_at)
        gevent.sleep(max(0.0, stop_at - time.time()))
        self.run.mark_stopping()
        self.await_finals()
        runner.quit()  # from a plain greenlet: the runner's group (and Locust's main wait) ends

    def announce_stop(self, stop_at: float) -> None:
        """Master: tell every worker when to stop its users (once; at once when ``stop_at`` has passed)."""
        if self.stop_at is not None:
            return
        self.stop_at = stop_at
        if self.run.role.value == "master":
            self.run.environment.runner.send_message(STOP_AT_MESSAGE, {"stop_at": stop_at})

    def await_finals(self) -> None:
        """Master: wait (bounded) until every worker's final report is in; name those that never came."""
        runner = self.run.environment.runner
        if self.run.role.value != "master" or self.awaited:
            return
        self.awaited = True
        workers = {c.id for c in runner.clients.all}
        until = time.monotonic() + FINAL_REPORT_WAIT
        while not workers <= self.finals and time.monotonic() < until:
            gevent.sleep(POLL)
        self.missing_final = tuple(sorted(workers - self.finals))
        if self.missing_final:
            LOG.warning("Swarmbench: no final report from worker(s) %s within %g s", ", ".join(self.missing_final),
                        FINAL_REPORT_WAIT)

    # -- a worker --------------------------------------------------------------------------------
    def on_stop_at(self, stop_at: float) -> None:
        """The master's planned end: stop this worker's users then, and report at once."""
        self.stop_at = stop_at
        if self.stopper is None and not self.run.stopped:
            self.stopper = gevent.spawn_later(max(0.0, stop_at - time.time()), self._stop_worker)

    def _stop_worker(self) -> None:
        self.run.mark_stopping()
        self.run.environment.runner.stop()  # test_stop follows; the plugin sends the final report

    def kill(self) -> None:
        for greenlet in (self.greenlet, self._count_sender):
            if greenlet is not None and greenlet is not gevent.getcurrent():
                greenlet.kill(block=False)


def record_unanswered(clients: Iterable[Any], record: Callable[[int], Any], stalled_s: float) -> None:
    """Each user waiting longer than ``stalled_s`` for a reply as the run begins to stop, with its wait (µs).

    Taken as stopping begins, before Locust stops the users: stopping them frees a
    server's busy threads, which then answer some of those still queued, so a count
    taken in each user's ``on_stop`` would depend on the order users were stopped in.
    """
    now, stalled = perf_counter_ns(), int(stalled_s * 1e9)
    for client in list(clients):
        busy = getattr(client, "busy", 0)
        if busy and now - busy > stalled:
            record((now - busy) // 1000)
