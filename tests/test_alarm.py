"""The open loop's alarm: a real timerfd and a real gevent hub, in a forked child (no Locust run, no sockets).

Each test runs forked (pytest-forked), so gevent and Locust, which ``harness.user`` imports, never reach
the pytest process itself.
"""

from __future__ import annotations

import os
from time import perf_counter_ns

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.user.alarm import Alarm

pytestmark = pytest.mark.forked


def _timerfds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[timerfd]":
                fds.add(int(name))
        except OSError:
            pass
    return fds


@pytest.fixture
def alarm() -> Alarm:
    from harness.user.alarm import make_alarm

    made = make_alarm()
    if made is None:
        pytest.skip("no timerfd here (Linux only): the open loop sleeps on libev's timers alone")
    yield made
    made.close()


def test_sleepers_wake_at_or_after_their_instants_in_their_order(alarm: Alarm) -> None:
    """Never early (a send before its due time would shorten its latency), and earliest first."""
    import gevent

    start = perf_counter_ns()
    offsets_us = [90_000, 30_000, 60_000, 40_000, 120_000, 20_000, 70_000]  # far apart: spawning takes no part
    woke: list[tuple[int, int]] = []
    slept: list[int] = []  # the dues of sleepers that started before their instant (on a busy machine one may not)

    def sleeper_(due: int) -> None:
        if perf_counter_ns() < due:
            slept.append(due)
        alarm.sleep_until(due)
        woke.append((due, perf_counter_ns()))

    gevent.joinall([gevent.spawn(sleeper_, start + us * 1000) for us in offsets_us], raise_error=True)
    assert len(woke) == len(offsets_us) and len(slept) >= 2
    assert all(at >= due for due, at in woke), woke
    order = [due for due, _ in woke if due in slept]
    assert order == sorted(order)
    # the timerfd fired and was re-armed until nothing was left to wait for (a sleeper whose libev timer ran
    # first, on a busy machine, returns before the expiry that pops its instant: that expiry follows)
    deadline = perf_counter_ns() + 1_000_000_000
    while (alarm.dues or alarm.armed) and perf_counter_ns() < deadline:
        gevent.sleep(0.001)
    assert alarm.refilled > start
    assert alarm.dues == [] and alarm.armed == 0


def test_the_timerfd_is_armed_for_the_earliest_instant_not_the_latest(alarm: Alarm) -> None:
    import gevent
    
    from harness.user.alarm import SLACK_NS

    now = perf_counter_ns()
    late, early = now + 50_000_000, now + 20_000_000
    first = gevent.spawn(alarm.sleep_until, late)
    gevent.sleep(0)  # it has pushed its instant and sleeps
    assert alarm.armed == late + SLACK_NS
    second = gevent.spawn(alarm.sleep_until, early)
    gevent.sleep(0)
    assert alarm.armed == early + SLACK_NS  # re-armed for the earlier one
    third = gevent.spawn(alarm.sleep_until, now + 40_000_000)
    gevent.sleep(0)
    assert alarm.armed == early + SLACK_NS  # a later one leaves it alone
    gevent.joinall([first, second, third], raise_error=True)
    assert perf_counter_ns() >= late


def test_an_instant_that_has_passed_returns_at_once_and_arms_nothing(alarm: Alarm) -> None:
    alarm.sleep_until(perf_counter_ns() - 1_000_000)
    assert alarm.dues == [] and alarm.armed == 0


def test_close_releases_the_fd_and_sleepers_still_wake_on_time(alarm: Alarm) -> None:
    """A user outliving its run (the run closed its alarm) still waits until its instant, never less."""
    import gevent

    due = perf_counter_ns() + 30_000_000
    sleeping = gevent.spawn(alarm.sleep_until, due)
    gevent.sleep(0)
    before = _timerfds()
    assert alarm.timer.fd in before
    alarm.close()
    alarm.close()  # twice is harmless
    sleeping.get()
    # (gevent's monkey-patched os.close, as in Locust, closes at the loop's next turn)
    assert alarm.timer.fd not in _timerfds()
    assert perf_counter_ns() >= due
    later = perf_counter_ns() + 5_000_000
    alarm.sleep_until(later)  # after close: libev's timer alone
    assert perf_counter_ns() >= later


def test_without_an_alarm_the_sleeper_is_gevents_and_is_never_early() -> None:
    from harness.user.alarm import sleeper

    sleep_until = sleeper(None)
    due = perf_counter_ns() + 5_000_000
    sleep_until(due)
    assert perf_counter_ns() >= due
    sleep_until(due - 10_000_000)  # passed: returns at once
