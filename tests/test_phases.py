"""The phases, driven directly: a real gevent hub and a stub of Locust's runner, no Locust run.

Each test runs in a forked child (``forked``) and imports ``harness.user`` (and so gevent and Locust)
inside its body. The runner stub records what the phases ask of Locust's runner (``send_message``,
``quit``, ``stop``); whole Locust runs check the same claims end to end in test_steady.py.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.forked


class Clients(dict):  # type: ignore[type-arg]
    """Locust's ``runner.clients`` (a mapping of worker id to node, with ``all``), for the parts used here."""

    @property
    def all(self) -> list[Any]:
        return list(self.values())


class Runner:
    """What the phases and the run use of Locust's runner, recording each call."""

    def __init__(self, workers: tuple[str, ...] = (), user_count: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.clients = Clients({w: SimpleNamespace(id=w) for w in workers})
        self.user_count = user_count

    def send_message(self, kind: str, data: Any = None) -> None:
        self.calls.append(("send_message", kind, data))

    def quit(self) -> None:
        self.calls.append(("quit",))

    def stop(self) -> None:
        self.calls.append(("stop",))

    def names(self) -> list[str]:
        return [call[0] if call[0] != "send_message" else call[1] for call in self.calls]


class Stops:
    """The stop callback: when it was called."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(time.time())


def wait(condition: Any, timeout: float = 5.0) -> bool:
    import gevent

    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            return False
        gevent.sleep(0.01)
    return True


def test_local_phases_establish_settle_measure_then_quit() -> None:
    from harness.user.phases import STOP_MARGIN, LocalPhases, PhasePlan

    runner, stops = Runner(), Stops()
    phases = LocalPhases(PhasePlan(timeout=5.0, settle=0.2, window=1.0), runner, 2, time.time(), stops)
    phases.start()
    phases.user_established()
    assert phases.established_at is None  # one of two
    phases.user_established()
    established = phases.established_at
    assert established is not None and established <= time.time()
    assert wait(lambda: runner.calls, timeout=4.0)
    assert runner.names() == ["quit"]  # a local runner announces nothing to anyone
    assert phases.measure_from == pytest.approx(established + 0.2)
    stop_at = int(established + 0.2) + 1 + 1.0 + STOP_MARGIN  # whole seconds: from the next one on
    assert phases.stop_at == pytest.approx(stop_at)
    assert len(stops.at) == 1 and stops.at[0] >= stop_at  # the run marked stopping first, never early
    found = phases.result()
    assert (found.established_at, found.measure_from) == (established, phases.measure_from)
    assert (found.users_established, found.users_not_established) == (2, 0)
    assert (found.establish_timeout, found.settle_s, found.window_planned_s) == (5.0, 0.2, 1.0)
    assert found.workers_missing_final == ()


def test_local_phases_measure_from_the_deadline_and_count_who_never_answered() -> None:
    from harness.user.phases import LocalPhases, PhasePlan

    started, runner = time.time(), Runner()
    phases = LocalPhases(PhasePlan(timeout=0.2, settle=0.1, window=0.0), runner, 3, started, Stops())
    phases.start()
    phases.user_established()
    assert wait(lambda: phases.measure_from is not None)
    assert phases.measure_from == pytest.approx(started + 0.2 + 0.1)
    phases.snapshot()
    phases.user_established()  # after the stop began: not counted
    found = phases.result()
    assert found.established_at is None and found.window_planned_s is None
    assert (found.users_established, found.users_not_established) == (1, 2)
    time.sleep(0.05)
    assert runner.calls == []  # no window: Locust's -t ends the run


def test_a_master_waits_for_every_worker_and_announces_the_stop_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.user import phases as module
    from harness.user.phases import STOP_AT_MESSAGE, MasterPhases, PhasePlan

    monkeypatch.setattr(module, "FINAL_REPORT_WAIT", 0.3)
    runner = Runner(workers=("w1", "w2"))
    phases = MasterPhases(PhasePlan(timeout=5.0), runner, 5, time.time(), Stops())
    phases.on_remote_count("w1", 2)
    phases.on_remote_count("w1", 1)  # a report older than the message: counts never go down
    assert phases.established_at is None
    phases.on_remote_count("w2", 3)
    assert phases.established_at is not None  # 2 + 3 of 5
    phases.announce_stop(123.0)
    phases.announce_stop(456.0)  # Locust's own stop, after the planned one: nothing more
    assert runner.calls == [("send_message", STOP_AT_MESSAGE, {"stop_at": 123.0})]
    phases.snapshot()
    phases.on_final("w1", 2)  # w2's final report never comes
    began = time.monotonic()
    phases.await_finals()
    assert 0.25 < time.monotonic() - began < 2.0
    phases.await_finals()  # once
    found = phases.result()
    assert found.workers_missing_final == ("w2",)
    assert (found.users_established, found.users_not_established) == (5, 0)


def test_a_worker_reports_its_count_in_batches_and_stops_its_users_at_the_planned_end() -> None:
    from harness.user.phases import COUNT_DELAY, ESTABLISHED_MESSAGE, PhasePlan, WorkerPhases

    runner, stops = Runner(), Stops()
    phases = WorkerPhases(PhasePlan(), runner, 4, time.time(), stops)
    phases.start()  # a worker runs no phases of its own
    for _ in range(3):
        phases.user_established()
    assert wait(lambda: runner.calls, timeout=COUNT_DELAY * 20)
    assert runner.calls == [("send_message", ESTABLISHED_MESSAGE, {"count": 3, "token": ""})]  # one for the three
    assert phases.established_at is None  # the master decides
    stop_at = time.time() + 0.2
    phases.on_stop_at(stop_at)
    assert wait(lambda: len(runner.calls) == 2)
    assert runner.calls[1] == ("stop",) and stops.at and stops.at[0] >= stop_at
    phases.snapshot()
    phases.user_established()
    assert phases.count_at_stop() == 3  # what the final report carries


def test_a_closed_worker_sends_nothing_more() -> None:
    import gevent

    from harness.user.phases import COUNT_DELAY, PhasePlan, WorkerPhases

    runner = Runner()
    phases = WorkerPhases(PhasePlan(), runner, 1, time.time(), Stops())
    phases.user_established()
    phases.close()
    phases.on_stop_at(time.time())
    gevent.sleep(COUNT_DELAY * 4)
    assert runner.calls == []
