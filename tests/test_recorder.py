"""The in-Locust recorder: per-second buffers into HdrHistograms, in bounded steps (no Locust run, no sockets).

The recorder imports neither Locust nor gevent, but its package does (``harness.user``): forked.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from harness.results.cells import GeneratorStats
from harness.results.histogram_file import HIGHEST_US, LoadSettings, summarize
from harness.results.worker_report import check_recording

if TYPE_CHECKING:
    from harness.user.recorder import Recorder

pytestmark = pytest.mark.forked


def to_file(recorder: Recorder):  # type: ignore[no-untyped-def]
    return recorder.to_file(started_at=0.0, ended_at=1.0, spawned_at=None, stopping_at=None,
                            options=LoadSettings(), generator=GeneratorStats())


def test_values_above_60_s_are_clamped_not_dropped() -> None:
    from harness.user.recorder import Recorder

    recorder = Recorder()
    recorder.buffer("message").extend([90_000_000, 61_000_000, 500, 700, -3])
    recorder.flush()
    summary = summarize(recorder.totals["message"], recorder.out_of_range["message"])
    assert summary["count"] == 5 and summary["out_of_range"] == 2
    assert summary["min_us"] == 0  # a negative value is recorded as 0
    assert HIGHEST_US <= summary["max_us"] < 1.001 * HIGHEST_US and summary["p99_us"] >= HIGHEST_US
    # a window of intervals does not know the counter: the top bucket stands for it
    assert summarize(to_file(recorder).window()["message"])["out_of_range"] == 2


def test_flush_in_bounded_steps_loses_nothing_when_stopped_midway() -> None:
    """The rotator yields between steps; a flush abandoned part-way is finished by the next one."""
    from harness.user.recorder import DISTINCT_STEP, Recorder

    recorder = Recorder()
    recorder.buffer("message").extend(range(1, 12_001))  # 12,000 distinct values
    recorder.buffer("connect").extend([5] * 20_000)
    first = recorder.second
    steps = recorder.flush_steps(1)
    for _ in range(3):
        next(steps)
    recorder.buffer("message").append(7)  # recorded during the flush: belongs to the next second
    steps.close()  # the rotator killed between two steps
    assert recorder.jobs
    recorder.flush()
    assert recorder.count("message") == 12_001 and recorder.count("connect") == 20_000
    assert not recorder.jobs
    assert recorder.per_second["message"] == {first: 12_000, 1: 1}
    fresh = Recorder()
    fresh.buffer("message").extend(range(1, 12_001))
    assert sum(1 for _ in fresh.flush_steps()) >= 12_000 // DISTINCT_STEP


def test_worker_reports_merge_second_by_second_into_the_masters_totals() -> None:
    """A worker ships closed seconds only; the master adds them to the same seconds, exactly."""
    from harness.user.recorder import Recorder, WorkerRecorder

    master, workers = Recorder(), [WorkerRecorder(), WorkerRecorder()]
    for n, worker in enumerate(workers):
        worker.second = 100
        worker.buffer("message").extend([100 + n] * 10)
        worker.fail("message", "ResetByServer")
        worker.flush(101)
        worker.buffer("message").extend([5000] * (n + 1))
        worker.flush(102)
        assert worker.totals == {} and worker.intervals == {}  # nothing kept: it is all in the outbox
        master.merge_report(check_recording(worker.take_report(), 0.0, 1000.0))  # what a master merges: checked
        assert worker.take_report() == {"intervals": {}, "failures": {}, "out_of_range": {}}
    assert master.per_second["message"] == {100: 20, 101: 3}
    assert master.count("message") == 23
    assert master.failures == {"message": {"ResetByServer": 2}}
    assert master.interval_failures == {100: {"message": {"ResetByServer": 2}}}
    model = to_file(master)
    assert model.window(100, 101)["message"].get_total_count() == 20
    assert model.window(101, 102)["message"].get_max_value() >= 4990


def test_take_report_ships_the_open_second_too() -> None:
    """A report carries everything recorded so far: Locust's own stats do, and the two must agree."""
    from harness.user.recorder import Recorder, WorkerRecorder

    worker = WorkerRecorder()
    worker.buffer("message").extend(range(1, 1001))
    report = worker.take_report()
    assert sum(len(row) for row in report["intervals"].values()) == 1 and not worker.buffer("message")
    master = Recorder()
    master.merge_report(check_recording(report, 0.0, time.time()))
    assert master.count("message") == 1000
