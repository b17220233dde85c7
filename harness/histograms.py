"""Microsecond latency histograms: per-second intervals, merging, the JSON file and its loader.

Locust rounds response times under 100 ms to whole milliseconds; a loopback
server answers in tens of microseconds. So every latency is also kept here in
an HdrHistogram (1 µs to 60 s, 3 significant digits).

Recording is split in two on purpose. The per-message path only appends an int
to a list (:meth:`Recorder.buffer`); once a second a background greenlet runs
:meth:`Recorder.flush_steps`, which counts equal values (``Counter`` runs in C)
and records each distinct value once. hdrh's ``record_value`` is pure Python
(about 2.5 µs a call here), so at 30k messages/s one flush is 10-25 ms of CPU;
done in one go it held the gevent hub that long, and every message in flight
got the delay (a 1 Hz spike in p99.9/max). ``flush_steps`` cuts it into steps of
bounded size and the caller yields between them. Closed intervals are kept
encoded (a few hundred bytes each instead of a 140 kB counts array), so long
runs stay small.

Values above ``HIGHEST_US`` (60 s) are recorded as 60 s and counted in
``out_of_range`` ("clamped"): dropping them would lower the percentiles exactly
when a server stalls. Negative values (clock skew of a caller) are recorded as 0.

This module imports neither Locust nor gevent: the sweep loads files with it.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

SCHEMA_VERSION = 1
KIND = "swarmbench.histograms"
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_FIGURES = 3
#: One flush step counts at most this many raw values (``Counter.update``: about 0.2 ms)...
RAW_STEP = 5000
#: ... or records at most this many distinct values (``record_value``: about 1 ms).
DISTINCT_STEP = 400
#: (key in the summary, percentile)
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50_us", 50.0),
    ("p90_us", 90.0),
    ("p95_us", 95.0),
    ("p99_us", 99.0),
    ("p999_us", 99.9),
    ("p9999_us", 99.99),
)

Failures = dict[str, dict[str, int]]


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def add_into(target: HdrHistogram, other: HdrHistogram) -> None:
    """``target.add(other)``, skipping empty ones (hdrh's add sets min to 0 for those)."""
    if other.get_total_count():
        target.add(other)


def encode(hist: HdrHistogram) -> str:
    """HdrHistogram's compressed base64 form, as text (JSON and msgpack friendly)."""
    return hist.encode().decode("ascii")


def merge_encoded(existing: str | None, hist: HdrHistogram) -> str:
    """The encoded sum of an encoded histogram (or nothing) and ``hist``."""
    if existing is None:
        return encode(hist)
    merged = HdrHistogram.decode(existing)
    add_into(merged, hist)
    return encode(merged)


def add_failures(target: Failures, other: Failures) -> None:
    for name, kinds in other.items():
        row = target.setdefault(name, {})
        for kind, count in kinds.items():
            row[kind] = row.get(kind, 0) + count


def summarize(hist: HdrHistogram, out_of_range: int | None = None) -> dict[str, Any]:
    """count, min/max/mean and p50..p99.99 in µs (``None`` when the histogram is empty).

    ``out_of_range``: how many values were clamped to ``HIGHEST_US``. Unknown (a
    window of intervals), it is the count in the histogram's top bucket: values
    clamped, or within one bucket (33 ms) below 60 s.
    """
    count = hist.get_total_count()
    if out_of_range is None:
        out_of_range = hist.get_count_at_value(HIGHEST_US) if count else 0
    summary: dict[str, Any] = {"count": count}
    if not count:
        summary.update({"min_us": None, "max_us": None, "mean_us": None})
        summary.update({key: None for key, _ in PERCENTILES})
    else:
        summary["min_us"] = hist.get_min_value()
        summary["max_us"] = hist.get_max_value()
        summary["mean_us"] = round(hist.get_mean_value(), 3)
        values = hist.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        summary.update({key: values[p] for key, p in PERCENTILES})
    summary["out_of_range"] = out_of_range
    return summary


class _Job:
    """One name's raw values of one second, on their way into a histogram (see Recorder.flush_steps)."""

    __slots__ = ("clamped", "counts", "hist", "items", "name", "second", "values")

    def __init__(self, second: int, name: str, values: list[int]) -> None:
        self.second, self.name, self.values = second, name, values
        self.counts: Counter[int] = Counter()
        self.items: list[tuple[int, int]] | None = None
        self.hist = new_histogram()
        self.clamped = 0

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
        for value, count in chunk:
            if value > HIGHEST_US:
                self.clamped += count
                value = HIGHEST_US
            elif value < 0:
                value = 0
            record(value, count)
        return not items


class Recorder:
    """One process's latencies: raw buffers of the current second, closed seconds, totals.

    A local or master process keeps everything (``intervals``, ``totals``). A
    worker (``ship=True``) keeps what it has not sent yet in an outbox that
    :meth:`take_report` empties; the master adds it with :meth:`merge_report`.
    """

    def __init__(self, ship: bool = False) -> None:
        self.ship = ship
        self.buffers: dict[str, list[int]] = {}
        self.second = int(time.time())
        self.pending_failures: Failures = {}
        self.intervals: dict[int, dict[str, str]] = {}
        self.interval_failures: dict[int, Failures] = {}
        self.totals: dict[str, HdrHistogram] = {}
        self.out_of_range: dict[str, int] = {}  # per name: values clamped to HIGHEST_US
        self.jobs: list[_Job] = []  # buffers taken out, not yet recorded (see flush_steps)
        self.per_second: dict[str, dict[int, int]] = {}
        self.failures: Failures = {}
        self.outbox: dict[int, dict[str, str]] = {}
        self.outbox_failures: dict[int, Failures] = {}
        self.outbox_out_of_range: dict[str, int] = {}
        self.changed = False

    # -- the per-message side ------------------------------------------------
    def buffer(self, name: str) -> list[int]:
        """The list to append µs values to; the same list object for the whole run."""
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = []
        return buf

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
        for name, buf in self.buffers.items():
            if buf:
                self.jobs.append(_Job(second, name, buf[:]))
                del buf[:]  # same list object: users keep their bound ``append``
        if self.pending_failures:
            failures, self.pending_failures = self.pending_failures, {}
            target = self.outbox_failures if self.ship else self.interval_failures
            add_failures(target.setdefault(second, {}), failures)
            if not self.ship:
                add_failures(self.failures, failures)
            self.changed = True
        if new_second is not None:
            self.second = new_second
        jobs = self.jobs
        while jobs:
            job = jobs[0]
            if job.step():
                jobs.pop(0)
                self._add_interval(job.second, job.name, job.hist, job.clamped)
            yield

    def _add_interval(self, second: int, name: str, hist: HdrHistogram, clamped: int) -> None:
        if self.ship:
            row = self.outbox.setdefault(second, {})
            row[name] = merge_encoded(row.get(name), hist)
            if clamped:
                self.outbox_out_of_range[name] = self.outbox_out_of_range.get(name, 0) + clamped
            return
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

    # -- distributed ---------------------------------------------------------------
    def take_report(self) -> dict[str, Any]:
        """Everything recorded since the last report (msgpack-safe: string keys)."""
        self.flush()
        report = {
            "intervals": {str(t): row for t, row in self.outbox.items()},
            "failures": {str(t): row for t, row in self.outbox_failures.items()},
            "out_of_range": self.outbox_out_of_range,
        }
        self.outbox, self.outbox_failures, self.outbox_out_of_range = {}, {}, {}
        return report

    def merge_report(self, report: dict[str, Any]) -> None:
        """Add a worker's report, second by second."""
        for t, row in report.get("intervals", {}).items():
            for name, encoded in row.items():
                self._add_interval(int(t), name, HdrHistogram.decode(encoded), 0)
        for t, failures in report.get("failures", {}).items():
            add_failures(self.interval_failures.setdefault(int(t), {}), failures)
            add_failures(self.failures, failures)
            self.changed = True
        for name, clamped in report.get("out_of_range", {}).items():
            self.out_of_range[name] = self.out_of_range.get(name, 0) + clamped

    def count(self, name: str) -> int:
        total = self.totals.get(name)
        return total.get_total_count() if total is not None else 0

    # -- the file ---------------------------------------------------------------------
    def to_dict(self, path: Path, **extra: Any) -> dict[str, Any]:
        names = {}
        for name, hist in sorted(self.totals.items()):
            row = summarize(hist, self.out_of_range.get(name, 0))
            row["hgrm"] = hgrm_path(path, name).name
            names[name] = row
        seconds = sorted(set(self.intervals) | set(self.interval_failures))
        intervals = [
            {
                "t": t,
                "histograms": self.intervals.get(t, {}),
                "failures": self.interval_failures.get(t, {}),
            }
            for t in seconds
        ]
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND,
            "unit": "us",
            "hgrm_unit": "ms",
            **extra,
            "names": names,
            "failures": self.failures,
            "intervals": intervals,
        }

    def write(self, path: Path, **extra: Any) -> dict[str, Any]:
        """Write the JSON file and one ``.hgrm`` per name (values in ms, as HdrHistogram's plotter expects)."""
        data = self.to_dict(path, **extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        for name, hist in self.totals.items():
            target = hgrm_path(path, name)
            tmp = target.with_name(target.name + ".tmp")
            with open(tmp, "wb") as out:
                hist.output_percentile_distribution(out, 1000)
            os.replace(tmp, target)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
        self.changed = False
        return data


def hgrm_path(path: Path, name: str) -> Path:
    """``results/run.json`` -> ``results/run.message.hgrm``."""
    return path.with_name(f"{path.stem}.{name}.hgrm")


# -- the loader the sweep calls -------------------------------------------------------


def load_histogram_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed file; a one-line ``ValueError`` when it is not a version-1 histogram file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable histogram file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ValueError(f"{path}: not a swarmbench histogram file (kind {data.get('kind')!r})"
                         if isinstance(data, dict) else f"{path}: not a swarmbench histogram file")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: histogram file schema_version {data.get('schema_version')!r}, this reader knows {SCHEMA_VERSION}"
        )
    return data


def _in_window(data: dict[str, Any], t0: float, t1: float) -> Iterable[dict[str, Any]]:
    return (row for row in data.get("intervals", ()) if t0 <= row["t"] < t1)


def window(data: dict[str, Any], t0: float, t1: float) -> dict[str, HdrHistogram]:
    """Per name, the sum of the intervals with ``t0 <= t < t1`` (epoch seconds)."""
    result: dict[str, HdrHistogram] = {}
    for row in _in_window(data, t0, t1):
        for name, encoded in row["histograms"].items():
            hist = HdrHistogram.decode(encoded)
            if name in result:
                add_into(result[name], hist)
            else:
                result[name] = hist
    return result


def window_failures(data: dict[str, Any], t0: float, t1: float) -> Failures:
    """Per name and failure class, the failures in the intervals with ``t0 <= t < t1``."""
    result: Failures = {}
    for row in _in_window(data, t0, t1):
        add_failures(result, row.get("failures", {}))
    return result
