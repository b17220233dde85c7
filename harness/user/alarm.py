"""Waking a greenlet at a ``perf_counter_ns`` instant to within the OS's wake-up latency, not a millisecond.

gevent's default loop (libev, epoll backend) waits in ``epoll_wait``, whose
timeout is whole milliseconds: libev rounds every wait up to at least 1 ms, so
``gevent.sleep(0.0003)`` on an otherwise idle loop wakes up to a millisecond
late. A busy loop runs due timers at its next I/O event, so the rounding shows
in the idle stretches: an open loop that sleeps until each send is due charged
it to ``send_lag``, and the loop-lag probe reported the timer's resolution as
the generator's delay (``bench/bench_generator.py`` measures both wake-ups; the
README has the figures).

:class:`Alarm` keeps sleeping on libev timers (in C, and run at every I/O
event) and only bounds the idle wait: it keeps the pending due instants in a
heap and arms one Linux ``timerfd`` (``CLOCK_MONOTONIC``, absolute: the clock
``perf_counter_ns`` reads on Linux) for the earliest. The hub watches the fd like
a socket, so ``epoll_wait`` returns when it expires, and libev then runs the
timers that are due. Where there is no timerfd (not Linux), or ``perf_counter``
is another clock, :func:`make_alarm` returns None and callers use
``gevent.sleep`` alone.
"""

from __future__ import annotations

import ctypes
import os
import time
from heapq import heappop, heappush
from time import perf_counter_ns
from typing import Any

import gevent

#: The timerfd's expiries are rationed, a token bucket: at most this many a second on average...
#: Each expiry is two syscalls and a Python callback, and may be an OS wake-up of its own after
#: which sends leave one by one instead of in the batches libev's rounding made. At a low rate
#: every instant gets its own expiry (the OS's wake-up latency: tens of µs); at a high one, when
#: the tokens run out, a sleeper on an idle loop waits at most 1/EXPIRIES_PER_S more (on a busy
#: loop libev runs it at the next I/O event anyway). A fixed gap between expiries instead would
#: either charge every sleeper that gap at low rates or, short, cost CPU at high ones; the bucket
#: keeps the OS's latency while it lasts and bounds the CPU when it runs out.
EXPIRIES_PER_S = 2000
#: ... and at most this many in a burst.
BURST = 4
#: The timerfd is armed this long after the instant: libev keeps its clock in double seconds, and
#: its timer must be due by the time the expiry wakes the loop (see Alarm.sleep_until).
SLACK_NS = 1_000
CLOCK_MONOTONIC = 1
TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME = os.O_NONBLOCK, os.O_CLOEXEC, 1  # Linux defines them so


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Timerfd:
    """timerfd_create/settime: the os module's (Python 3.13+) or libc's through ctypes."""

    def __init__(self) -> None:
        self.native = hasattr(os, "timerfd_settime_ns")
        if self.native:
            self.fd = os.timerfd_create(CLOCK_MONOTONIC, flags=TFD_NONBLOCK | TFD_CLOEXEC)  # type: ignore[attr-defined]
            return
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p)
        self._spec = _Itimerspec()
        self._value = self._spec.it_value
        self._ref = ctypes.byref(self._spec)
        fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd

    def arm(self, due_ns: int) -> None:
        """Expire at ``due_ns`` on CLOCK_MONOTONIC (0 disarms)."""
        if self.native:
            os.timerfd_settime_ns(self.fd, flags=TFD_TIMER_ABSTIME, initial=due_ns)  # type: ignore[attr-defined]
            return
        value = self._value
        value.tv_sec, value.tv_nsec = divmod(due_ns, 1_000_000_000)
        if self._settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def close(self) -> None:
        os.close(self.fd)


class Alarm:
    """Bounds the hub's idle wait by the earliest due instant; libev's timers do the waking."""

    def __init__(self) -> None:
        self.timer = _Timerfd()
        self.dues: list[int] = []  # a heap of the instants greenlets sleep until
        self.armed = 0  # the instant the timerfd is set for; 0 when disarmed
        self.quiet_until = 0  # no expiry before this: the bucket is empty until then
        self.tokens = float(BURST)
        self.refilled = 0  # when the bucket was last counted (perf_counter_ns)
        self.closed = False
        self.hub = gevent.get_hub()
        try:
            # ref=False: the alarm alone does not keep the loop alive (the sleepers' own timers do)
            self.watcher = self.hub.loop.io(self.timer.fd, 1, ref=False)  # 1: readable
            self.watcher.start(self._expired)
        except BaseException:
            self.timer.close()
            raise

    def sleep_until(self, due_ns: int) -> None:
        """Return at ``due_ns`` (``perf_counter_ns`` time) or just after; at once when it has passed.

        libev's clock is read before ours, so its timer is due at or before ``due_ns``
        and the timerfd, armed at ``due_ns``, can only expire once libev's timer is due:
        an expiry that came first would leave libev waiting its rounded millisecond.
        The timer may then run a little before ``due_ns``: the loop sleeps the rest.
        """
        hub = self.hub
        loop = hub.loop
        bounded = False
        while True:
            loop.update_now()
            left = due_ns - perf_counter_ns()
            if left <= 0:
                return
            if not bounded:  # once: woken early, the instant is still in the heap (its expiry pops it)
                self.bound(due_ns)
                bounded = True
            with loop.timer(left / 1e9) as timer:  # gevent.sleep, without its second clock read
                hub.wait(timer)

    def bound(self, due_ns: int) -> None:
        """The hub's idle wait ends by ``due_ns`` (plus SLACK_NS, or when the bucket allows).

        For a libev timer started after ``loop.update_now()`` for ``due_ns``: see sleep_until.
        """
        if self.closed:
            return
        heappush(self.dues, due_ns)
        at = due_ns + SLACK_NS
        if at < self.quiet_until:
            at = self.quiet_until
        if not self.armed or at < self.armed:
            self._arm(at)

    def _arm(self, at: int) -> None:
        try:
            self.timer.arm(at)
        except OSError:  # cannot happen with a good fd; if it does, libev's timers alone from here
            self.close()
            return
        self.armed = at

    def _expired(self) -> None:
        """In the hub: the timerfd expired (libev runs the due timers after this). Arm for the next due."""
        fired, self.armed = self.armed, 0
        try:
            os.read(self.timer.fd, 8)
        except BlockingIOError:  # not expired after all (re-armed since the loop saw it readable)
            self.armed = fired
            return
        except OSError:
            self.close()
            return
        # libev read its clock after the expiry, so the timers of dues up to ``fired`` run in this
        # loop iteration; a later due stays in the heap, whatever the time is now
        dues = self.dues
        while dues and dues[0] <= fired:
            heappop(dues)
        now = perf_counter_ns()
        tokens = min(BURST, self.tokens + (now - self.refilled) * EXPIRIES_PER_S / 1e9) - 1
        self.tokens, self.refilled = tokens, now
        self.quiet_until = now if tokens >= 1 else now + int((1 - tokens) * 1e9 / EXPIRIES_PER_S)
        if dues:
            self._arm(max(dues[0] + SLACK_NS, self.quiet_until))

    def close(self) -> None:
        """Stop watching and close the fd; sleepers still wake, on libev's timers alone."""
        if self.closed:
            return
        self.closed = True
        self.armed = 0
        self.watcher.stop()
        self.timer.close()


def make_alarm() -> Alarm | None:
    """An Alarm, or None where timerfd or a CLOCK_MONOTONIC ``perf_counter`` is missing."""
    if "CLOCK_MONOTONIC" not in time.get_clock_info("perf_counter").implementation:
        return None
    try:
        return Alarm()
    except (OSError, AttributeError):
        return None


def sleeper(alarm: Alarm | None) -> Any:
    """``sleep_until(due_ns)``: the alarm's, or gevent.sleep's (whole milliseconds on an idle libev loop)."""
    if alarm is not None:
        return alarm.sleep_until

    def sleep_until(due_ns: int) -> None:
        left = due_ns - perf_counter_ns()
        if left > 0:
            gevent.sleep(left / 1e9)

    return sleep_until
