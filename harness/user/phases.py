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
   of the settle. With a window, the phases end the run themselves when it is
   over (Locust's ``-t`` stays as an upper bound), so the seconds measured are
   the seconds asked for, whenever establishment came.

One class per role, as the plugins (:mod:`harness.user.plugin`):

- :class:`LocalPhases` (a local runner) counts its users and runs the phases;
  at the end it just quits.
- :class:`MasterPhases` adds the workers' counts and, distributed, ends the run
  so that nothing is lost: it broadcasts the planned end
  (``swarmbench_stop_at``) to its workers; when Locust's ``-t`` ends the run
  instead, the end is announced "now" as the master begins to stop. Either way
  the master waits (bounded by ``FINAL_REPORT_WAIT``) for every worker's final
  report before it calls ``runner.quit()``: Locust's own quit waits only 0.5 s
  after sending "quit", while a worker's users may take up to their quit
  timeout (2 s) to stop, so their last seconds were lost. A worker whose final
  report never came is named in the file. Sending Locust's own "stop" message
  instead would make the master forget the worker ("client_stopped"), which
  breaks the quit.
- :class:`WorkerPhases` runs no phases: it tells the master its established
  count within ``COUNT_DELAY`` (a custom message, not the 3 s stats report),
  and stops its own users at the master's planned end (``runner.stop()``:
  users run ``on_stop``); its plugin then sends the final report at once.

Each takes what it needs (the plan, Locust's runner, the test's users, the
run's start and a callback that marks the run stopping) and tells the run what
it found through one :class:`PhaseResult`. Imports gevent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, NamedTuple

import gevent

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


class PhasePlan(NamedTuple):
    """The phases' options, in seconds."""

    timeout: float = DEFAULT_ESTABLISH_TIMEOUT  # bound on the ramp
    settle: float = 0.0
    window: float = 0.0  # 0: Locust's -t ends the run


def phase_options(parsed: Any) -> PhasePlan:
    """The phases' options from Locust's parsed options; a one-line ValueError when one is wrong."""
    timeout = float(getattr(parsed, "establish_timeout", DEFAULT_ESTABLISH_TIMEOUT) or DEFAULT_ESTABLISH_TIMEOUT)
    settle = float(getattr(parsed, "swarmbench_settle", 0.0) or 0.0)
    window = float(getattr(parsed, "swarmbench_window", 0.0) or 0.0)
    if not 0 < timeout < 3600:
        raise ValueError(f"--establish-timeout must be seconds in (0, 3600) (got {timeout})")
    if not 0 <= settle < 3600 or not 0 <= window < 86400:
        raise ValueError(f"--swarmbench-settle and --swarmbench-window must be seconds >= 0 (got {settle}, {window})")
    return PhasePlan(timeout, settle, window)


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """What the phases found, as the histogram file names it (``HistogramFile``'s fields of the same names)."""

    established_at: float | None
    measure_from: float | None
    users_established: int
    users_not_established: int
    establish_timeout: float
    settle_s: float
    window_planned_s: float | None
    workers_missing_final: tuple[str, ...] = ()


class Phases:
    """What every role's phases do: count this process's established users, and say what they found.

    ``runner``: Locust's runner (None when Locust is driven without one, as in
    tests); ``users``: the test's users over every process, which establishment
    waits for; ``stop``: marks the run stopping (the run's ``mark_stopping``).
    """

    def __init__(self, plan: PhasePlan, runner: Any, users: int, started_at: float, stop: Callable[[], None]) -> None:
        self.plan = plan
        self.runner = runner
        self.users = users
        self.started_at = started_at
        self.stop = stop
        self.established = 0  # users of this process that had their first reply
        self.at_stop: int | None = None  # this process's count as the run began to stop
        self.established_at: float | None = None
        self.measure_from: float | None = None
        self.stop_at: float | None = None
        self.closed = False
        self.greenlet: Any = None  # the phases (a local runner's, a master's)

    def start(self) -> None:
        """The run started (Locust's ``test_start``)."""

    def expect(self, users: int) -> None:
        """The test's users, over every process, once known better (all spawned)."""
        self.users = users

    def user_established(self) -> None:
        """A user of this process had its first reply (called once per user)."""
        self.established += 1
        self._check()

    def total(self) -> int:
        return self.established

    def _check(self) -> None:
        if self.established_at is None and self.total() >= self.users > 0:
            self.established_at = time.time()

    def window_end(self) -> float | None:
        """The planned end of the window (wall clock), once known."""
        return self.stop_at - STOP_MARGIN if self.stop_at is not None else None

    def window_start(self, end: float) -> float:
        """Where the window that ends at ``end`` began: the planned window, else the measure's start."""
        if self.plan.window > 0:
            return end - self.plan.window
        return self.measure_from if self.measure_from is not None else self.started_at

    def snapshot(self) -> None:
        """As the run begins to stop, before stopping users drains a server's queue (answering some)."""
        if self.at_stop is None:
            self.at_stop = self.established

    def count_at_stop(self) -> int:
        """This process's established users as the run began to stop (so far, if it has not)."""
        return self.established if self.at_stop is None else self.at_stop

    def total_at_stop(self) -> int:
        return self.count_at_stop()

    def not_established(self) -> int:
        """Users with no reply yet as the run began to stop."""
        return max(0, self.users - self.total_at_stop())

    def missing_final(self) -> tuple[str, ...]:
        return ()

    def result(self) -> PhaseResult:
        plan = self.plan
        return PhaseResult(
            established_at=self.established_at, measure_from=self.measure_from,
            users_established=self.total_at_stop(), users_not_established=self.not_established(),
            establish_timeout=plan.timeout, settle_s=plan.settle, window_planned_s=plan.window or None,
            workers_missing_final=self.missing_final(),
        )  # fmt: skip

    def close(self) -> None:
        """The run stopped: nothing more is sent or scheduled."""
        self.closed = True
        if self.greenlet is not None and self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=False)


class LocalPhases(Phases):
    """A local runner: watches for establishment or the deadline, settles, measures, then ends the run."""

    def start(self) -> None:
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._phases)

    def _phases(self) -> None:
        plan = self.plan
        deadline = self.started_at + plan.timeout
        while self.established_at is None and time.time() < deadline:
            gevent.sleep(POLL)
        begin = self.established_at if self.established_at is not None else deadline
        if self.established_at is None:
            LOG.warning("Swarmbench: %d of %d users not established within %g s; measuring from the deadline",
                        self.not_established(), self.users, plan.timeout)
        self.measure_from = begin + plan.settle
        if plan.window <= 0:
            return
        stop_at = math.ceil(self.measure_from) + plan.window + STOP_MARGIN
        self.announce_stop(stop_at)
        sleep_until(stop_at)
        self.stop()
        self.await_finals()
        self.runner.quit()  # from a plain greenlet: the runner's group (and Locust's main wait) ends

    def announce_stop(self, stop_at: float) -> None:
        """The run's planned end (once)."""
        if self.stop_at is None:
            self.stop_at = stop_at

    def await_finals(self) -> None:
        """Before the runner quits: a local runner has nobody to wait for."""


class MasterPhases(LocalPhases):
    """A master: the phases over every worker's count; the end announced to the workers, their finals awaited."""

    def __init__(self, plan: PhasePlan, runner: Any, users: int, started_at: float, stop: Callable[[], None]) -> None:
        super().__init__(plan, runner, users, started_at, stop)
        self.remote: dict[str, int] = {}  # each worker's count
        self.remote_at_stop: dict[str, int] = {}  # each worker's count as it began to stop
        self.finals: set[str] = set()  # workers whose final report arrived
        self.missing: tuple[str, ...] = ()
        self.awaited = False

    def on_remote_count(self, client_id: str, count: int) -> None:
        """A worker's established count (its message, or its report)."""
        self.remote[client_id] = max(count, self.remote.get(client_id, 0))
        self._check()

    def on_final(self, client_id: str, count: int) -> None:
        """A worker's final report: its count as it began to stop; it will send nothing more."""
        self.remote_at_stop[client_id] = count
        self.finals.add(client_id)

    def total(self) -> int:
        return self.established + sum(self.remote.values())

    def total_at_stop(self) -> int:
        return self.count_at_stop() + sum({**self.remote, **self.remote_at_stop}.values())

    def missing_final(self) -> tuple[str, ...]:
        return self.missing

    def announce_stop(self, stop_at: float) -> None:
        """Tell every worker when to stop its users (once; at once when ``stop_at`` has passed)."""
        if self.stop_at is None:
            self.stop_at = stop_at
            self.runner.send_message(STOP_AT_MESSAGE, {"stop_at": stop_at})

    def await_finals(self) -> None:
        """Wait (bounded) until every worker's final report is in; name those that never came."""
        if self.awaited:
            return
        self.awaited = True
        workers = {c.id for c in self.runner.clients.all}
        until = time.monotonic() + FINAL_REPORT_WAIT
        while not workers <= self.finals and time.monotonic() < until:
            gevent.sleep(POLL)
        self.missing = tuple(sorted(workers - self.finals))
        if self.missing:
            LOG.warning("Swarmbench: no final report from worker(s) %s within %g s", ", ".join(self.missing),
                        FINAL_REPORT_WAIT)


class WorkerPhases(Phases):
    """A worker: tells the master its count, and stops its users at the master's planned end."""

    def __init__(self, plan: PhasePlan, runner: Any, users: int, started_at: float, stop: Callable[[], None]) -> None:
        super().__init__(plan, runner, users, started_at, stop)
        self._count_sender: Any = None
        self.stopper: Any = None

    def user_established(self) -> None:
        self.established += 1
        if self._count_sender is None:
            self._count_sender = gevent.spawn_later(COUNT_DELAY, self._send_count)

    def _send_count(self) -> None:
        self._count_sender = None
        if self.runner is not None and not self.closed:
            try:
                token = run_token(getattr(self.runner, "environment", None))
                self.runner.send_message(ESTABLISHED_MESSAGE, {"count": self.established, "token": token})
            except Exception as exc:  # a lost count only delays the window to the deadline
                LOG.warning("Swarmbench: could not send the established count: %s", exc)

    def on_stop_at(self, stop_at: float) -> None:
        """The master's planned end: stop this worker's users then (its plugin then reports at once)."""
        self.stop_at = stop_at
        if self.stopper is None and not self.closed:
            self.stopper = gevent.spawn_later(max(0.0, stop_at - time.time()), self._stop_users)

    def _stop_users(self) -> None:
        if self.stop_at is not None:
            sleep_until(self.stop_at)
        self.stop()
        self.runner.stop()  # test_stop follows; the plugin sends the final report

    def close(self) -> None:
        super().close()
        if self._count_sender is not None and self._count_sender is not gevent.getcurrent():
            self._count_sender.kill(block=False)


def run_token(environment: Any) -> str:
    """The run's token on a worker, from the master's spawn message (see ``MasterPlugin``); "" before one came."""
    parsed = getattr(environment, "parsed_options", None)
    return str(getattr(parsed, "swarmbench_token", "") or "")


def sleep_until(when: float) -> None:
    """Sleep until the wall clock reaches ``when``: libev times a timer from its loop's cached clock, so one
    sleep (or ``spawn_later``) can end a little early (0.5 ms was seen)."""
    while (left := when - time.time()) > 0:
        gevent.sleep(left)


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
