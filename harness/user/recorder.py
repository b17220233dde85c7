"""Recording latencies inside a Locust process: a list append per message, histograms once a second.

Recording is split in two on purpose. The per-message path only appends an int
to a list (:meth:`Recorder.buffer`); once a second a background greenlet runs
:meth:`Recorder.flush_steps`, which counts equal values (``Counter`` runs in C)
and records each distinct value once. hdrh's ``record_value`` is pure Python
(about 2.5 µs a call here), so at 30k messages/s one flush is 10-25 ms of CPU;
done in one go it held the gevent hub that long, and every message in flight
got the delay (a 1 Hz spike in p99.9/max). ``flush_steps`` cuts it into steps of
bounded size and the caller yields between them. Closed intervals are kept
encoded (a few hundred bytes each instead of a 140 kB counts array).

Two kinds: a :class:`Recorder` keeps everything (a local runner, a master); a
:class:`WorkerRecorder` keeps what it has not sent yet in an outbox that
:meth:`WorkerRecorder.take_report` empties, and the master adds it with
:meth:`Recorder.merge_report`. Negative values (clock skew) are recorded as 0.

A :class:`Tap` on a name (``Recorder.taps``) sees each cut of its buffer: at
the cut, then the cut's (value, count) pairs step by step, then its end. Locust's
stats get their messages this way, once per cut (``harness.user.stats.LocustBatch``).

Imports neither Locust nor gevent: the caller decides how to yield.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from hdrh.histogram import HdrHistogram

from harness.results.cells import GeneratorStats, Latency
from harness.results.histogram_file import (
    HIGHEST_US,
    Failures,
    HistogramFile,
    Interval,
    LoadSettings,
    add_failures,
    add_into,
    hgrm_path,
    hgrm_text,
    merge_encoded,
    new_histogram,
    summarize,
)
from harness.results.store import write_bytes
from harness.results.worker_report import Recording

#: One flush step counts at most this many raw values (``Counter.update``: about 0.2 ms)...
RAW_STEP = 5000
#: ... or records at most this many distinct values (``record_value``: about 0.25 ms).
DISTINCT_STEP = 100


class Tap(Protocol):
    """Sees one name's values once a cut: ``cut`` when the buffer is taken, ``add`` per step, ``done`` at the end."""

    def cut(self, second: int) -> Any: ...

    def add(self, cut: Any, items: list[tuple[int, int]]) -> None: ...

    def done(self, cut: Any) -> None: ...


class _Job:
    """One name's raw values of one second, on their way into a histogram (see Recorder.flush_steps)."""

    __slots__ = ("clamped", "counts", "cut", "hist", "items", "name", "second", "tap", "values")

    def __init__(self, second: int, name: str, values: list[int], tap: Tap | None = None) -> None:
        self.second, self.name, self.values = second, name, values
        self.counts: Counter[int] = Counter()
        self.items: list[tuple[int, int]] | None = None
        self.hist = new_histogram()
        self.clamped = 0
        self.tap = tap
        self.cut = tap.cut(second) if tap is not None else None  # at the instant the buffer is taken

    def step(self) -> bool:
        """Count RAW_STEP values or record DISTINCT_STEP distinct ones; True when done."""
        values = self.values
        if values:
            self.counts.update(values[-RAW_STEP:])
            del values[-RAW_STEP:]
            return False
        if self.items is None:
            self.items = list(self.counts.items())
            self.counts = Counter()
        items, record = self.items, self.hist.record_value
        chunk = items[-DISTINCT_STEP:]
        del items[-DISTINCT_STEP:]
        if self.tap is not None:
            self.tap.add(self.cut, chunk)
            if not items:
                self.tap.done(self.cut)
        for value, count in chunk:
            if value > HIGHEST_US:
                self.clamped += count
                value = HIGHEST_US
            elif value < 0:
                value = 0
            record(value, count)
        return not items


class Recorder:
    """One process's latencies: raw buffers of the current second, closed seconds, totals."""

    def __init__(self) -> None:
        self.buffers: dict[str, list[int]] = {}
        self.second = int(time.time())
        self.pending_failures: Failures = {}
        self.intervals: dict[int, dict[str, str]] = {}
        self.interval_failures: dict[int, Failures] = {}
        self.totals: dict[str, HdrHistogram] = {}
        self.out_of_range: dict[str, int] = {}  # per name: values clamped to HIGHEST_US
        self.jobs: list[_Job] = []  # buffers taken out, not yet recorded (see flush_steps)
        self.taps: dict[str, Tap] = {}  # per name: who else sees each cut (Locust's stats)
        self.per_second: dict[str, dict[int, int]] = {}
        self.failures: Failures = {}
        self.changed = False

    # -- the per-message side ------------------------------------------------
    def buffer(self, name: str) -> list[int]:
        """The list to append µs values to; the same list object for the whole run."""
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = []
        return buf

    def record_counts(self, name: str, pairs: Iterable[tuple[int, int]]) -> None:
        """(µs, count) pairs into the current second at once: once a run (the census), not per message."""
        hist, clamped = new_histogram(), 0
        for value, count in pairs:
            if value > HIGHEST_US:
                clamped += count
                value = HIGHEST_US
            hist.record_value(max(0, value), count)
        self._add_interval(self.second, name, hist, clamped)

    def fail(self, name: str, kind: str) -> None:
        row = self.pending_failures.get(name)
        if row is None:
            row = self.pending_failures[name] = {}
        row[kind] = row.get(kind, 0) + 1

    # -- once a second ---------------------------------------------------------
    def flush(self, new_second: int | None = None) -> None:
        """Close the buffers into the current second, all at once; then start ``new_second``."""
        for _ in self.flush_steps(new_second):
            pass

    def flush_steps(self, new_second: int | None = None) -> Iterator[None]:
        """:meth:`flush` in steps: the caller may yield to other greenlets at each ``yield``.

        The buffers are emptied into ``jobs`` at once (so the second each value
        belongs to is fixed); each step then does a bounded part of the work and
        leaves the rest in ``jobs``. A caller stopped between steps loses
        nothing: the next flush, or a concurrent one, finishes the jobs.
        """
        second = self.second
        taps = self.taps
        for name, buf in self.buffers.items():
            if buf:
                self.jobs.append(_Job(second, name, buf[:], taps.get(name)))
                del buf[:]  # same list object: users keep their bound ``append``
        if self.pending_failures:
            failures, self.pending_failures = self.pending_failures, {}
            self._add_failures(second, failures)
        if new_second is not None:
            self.second = new_second
        jobs = self.jobs
        while jobs:
            job = jobs[0]
            if job.step():
                jobs.pop(0)
                self._add_interval(job.second, job.name, job.hist, job.clamped)
            yield

    def _add_failures(self, second: int, failures: Failures) -> None:
        add_failures(self.interval_failures.setdefault(second, {}), failures)
        add_failures(self.failures, failures)
        self.changed = True

    def _add_interval(self, second: int, name: str, hist: HdrHistogram, clamped: int) -> None:
        total = self.totals.get(name)
        if total is None:
            total = self.totals[name] = new_histogram()
        add_into(total, hist)
        counts = self.per_second.setdefault(name, {})
        counts[second] = counts.get(second, 0) + hist.get_total_count()
        if clamped or name not in self.out_of_range:
            self.out_of_range[name] = self.out_of_range.get(name, 0) + clamped
        row = self.intervals.setdefault(second, {})
        row[name] = merge_encoded(row.get(name), hist)
        self.changed = True

    # -- distributed: the master's side ------------------------------------------------
    def merge_report(self, report: Recording) -> None:
        """Add a worker's report, checked (:func:`~harness.results.worker_report.check_recording`), second by second."""
        for t, row in report.intervals.items():
            for name, hist in row.items():
                self._add_interval(t, name, hist, 0)
        for t, failures in report.failures.items():
            self._add_failures(t, failures)
        for name, clamped in report.out_of_range.items():
            self.out_of_range[name] = self.out_of_range.get(name, 0) + clamped

    def count(self, name: str) -> int:
        total = self.totals.get(name)
        return total.get_total_count() if total is not None else 0

    # -- the file ---------------------------------------------------------------------
    def to_file(
        self,
        *,
        started_at: float,
        ended_at: float,
        spawned_at: float | None,
        stopping_at: float | None,
        options: LoadSettings,
        generator: GeneratorStats,
    ) -> HistogramFile:
        names = {
            name: Latency.from_dict(summarize(hist, self.out_of_range.get(name, 0)))
            for name, hist in sorted(self.totals.items())
        }
        seconds = sorted(set(self.intervals) | set(self.interval_failures))
        intervals = tuple(
            Interval(t, self.intervals.get(t, {}), self.interval_failures.get(t, {})) for t in seconds
        )
        return HistogramFile(
            started_at=started_at, ended_at=ended_at, spawned_at=spawned_at, stopping_at=stopping_at,
            options=options, generator=generator, names=names, failures=self.failures, intervals=intervals,
        )  # fmt: skip

    def write(self, path: Path, model: HistogramFile) -> None:
        """Write the JSON file and one ``.hgrm`` per name (values in ms, as HdrHistogram's plotter expects)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for name, hist in self.totals.items():
            write_bytes(hgrm_path(path, name), hgrm_text(hist))
        write_bytes(path, model.to_json(path.stem))
        self.changed = False


class WorkerRecorder(Recorder):
    """A worker's recorder: closed seconds wait in an outbox for the next report to the master."""

    def __init__(self) -> None:
        super().__init__()
        self.outbox: dict[int, dict[str, str]] = {}
        self.outbox_failures: dict[int, Failures] = {}
        self.outbox_out_of_range: dict[str, int] = {}

    def _add_failures(self, second: int, failures: Failures) -> None:
        add_failures(self.outbox_failures.setdefault(second, {}), failures)
        self.changed = True

    def _add_interval(self, second: int, name: str, hist: HdrHistogram, clamped: int) -> None:
        row = self.outbox.setdefault(second, {})
        row[name] = merge_encoded(row.get(name), hist)
        if clamped:
            self.outbox_out_of_range[name] = self.outbox_out_of_range.get(name, 0) + clamped

    def take_report(self) -> dict[str, Any]:
        """Everything recorded and not sent yet (msgpack-safe: string keys).

        The worker's rotation flushes its buffers in steps ten times a second
        (see ``harness.user.run``), so what this flush does at once is at
        most a tenth of a second's values, not a whole second's.
        """
        self.flush()
        report = {
            "intervals": {str(t): row for t, row in self.outbox.items()},
            "failures": {str(t): row for t, row in self.outbox_failures.items()},
            "out_of_range": self.outbox_out_of_range,
        }
        self.outbox, self.outbox_failures, self.outbox_out_of_range = {}, {}, {}
        self.changed = False
        return report
