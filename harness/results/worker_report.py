"""What a master accepts from its workers: every field checked before anything is merged.

Anything that reaches the master's port can send Locust's ``stats`` message, and Locust fires
``worker_report`` for it whoever sent it. So the master merges a report only when it comes from
a worker registered with its runner, carries this run's token (a random value the master hands
its workers with the spawn message, so a worker of an earlier run, or a process that merely
connected, cannot write into this one) and is well formed down to each histogram. A report that
fails is dropped whole, never merged in part, and the master says so once per sender.

The master's plugin (:mod:`harness.user.plugin`) calls it; it imports neither Locust nor gevent, so it is
checked here with payloads in and verdicts out.
"""

from __future__ import annotations

import binascii
import math
import zlib
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.results.histogram_file import HIGHEST_US, LOWEST_US, SIGNIFICANT_FIGURES

#: Bounds on what one report may hold: far above what a worker sends, far below what would hurt.
MAX_NAMES = 64
MAX_SECONDS = 600  # seconds of intervals in one report (a worker reports every 3 s)
MAX_NAME_LENGTH = 200
MAX_ENCODED = 1 << 20  # bytes of one encoded histogram
MAX_COUNT = 1 << 40
#: A report's seconds lie within the run, give or take clocks that differ between machines.
CLOCK_SLACK_S = 600.0
CPU_NUMBERS = ("cpu_percent_mean", "cpu_percent_max", "cpu_seconds", "samples", "users_max", "rss_bytes_max",
               "nofile_limit")  # fmt: skip
CPU_TEXTS = ("role", "host")
#: ... and those that may be null or absent (none measured yet; absent: a worker of an older version).
CPU_OPTIONAL = ("cpu_percent_max_steady", "cpu_percent_now", "rss_bytes_now")


class BadReport(ValueError):
    """A worker's report that is not merged; the message says which field and why, in one line."""


@dataclass(frozen=True)
class Recording:
    """What a worker recorded since its last report, checked: histograms decoded once, here, so that
    merging them cannot fail half-way."""

    intervals: dict[int, dict[str, HdrHistogram]]
    failures: dict[int, dict[str, dict[str, int]]]
    out_of_range: dict[str, int]


@dataclass(frozen=True)
class WorkerReport:
    """A checked report: the recording, the worker's CPU summary, its established users, whether it is its last,
    and how many of its users were waiting over the stall bound for a reply as it sent the report."""

    recording: Recording
    cpu: dict[str, Any]
    established: int
    final: bool
    stalled: int = 0


def check_report(payload: Any, token: str, started_at: float, now: float) -> WorkerReport:
    """``payload`` (the ``swarmbench`` part of a worker's stats message) checked whole, or :class:`BadReport`."""
    if not isinstance(payload, dict):
        raise BadReport(f"not a mapping but {type(payload).__name__}")
    if payload.get("token") != token:
        raise BadReport("not this run's token")
    recording = check_recording(payload.get("report"), started_at, now)
    final = payload.get("final", False)
    if not isinstance(final, bool):
        raise BadReport("final: not a boolean")
    return WorkerReport(recording, _cpu(payload.get("cpu")), _count(payload.get("established", 0), "established"),
                        final, _count(payload.get("stalled", 0), "stalled"))  # fmt: skip


def check_recording(value: Any, started_at: float, now: float) -> Recording:
    """A worker recorder's ``take_report()`` checked, or :class:`BadReport`; seconds must lie within the run."""
    report = _mapping(value, "report")
    seconds = (started_at - CLOCK_SLACK_S, now + CLOCK_SLACK_S)
    intervals = {
        _second(t, seconds, "report.intervals"): {
            _name(name, "report.intervals"): _histogram(encoded, f"report.intervals[{name!r}]")
            for name, encoded in _mapping(row, "report.intervals", MAX_NAMES).items()
        }
        for t, row in _mapping(report.get("intervals", {}), "report.intervals", MAX_SECONDS).items()
    }
    failures = {
        _second(t, seconds, "report.failures"): {
            _name(name, "report.failures"): {
                _name(kind, "report.failures"): _count(n, "report.failures")
                for kind, n in _mapping(kinds, "report.failures", MAX_NAMES).items()
            }
            for name, kinds in _mapping(row, "report.failures", MAX_NAMES).items()
        }
        for t, row in _mapping(report.get("failures", {}), "report.failures", MAX_SECONDS).items()
    }
    out_of_range = {
        _name(name, "report.out_of_range"): _count(n, "report.out_of_range")
        for name, n in _mapping(report.get("out_of_range", {}), "report.out_of_range", MAX_NAMES).items()
    }
    return Recording(intervals, failures, out_of_range)


def _mapping(value: Any, field: str, limit: int | None = None) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise BadReport(f"{field}: not a mapping")
    if limit is not None and len(value) > limit:
        raise BadReport(f"{field}: {len(value)} entries, more than {limit}")
    return value


def _second(key: Any, bounds: tuple[float, float], field: str) -> int:
    try:
        second = int(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else None
    except ValueError:
        second = None
    if second is None or not bounds[0] <= second <= bounds[1]:
        raise BadReport(f"{field}: {str(key)[:20]!r} is not a second of this run")
    return second


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH or not value.isprintable():
        raise BadReport(f"{field}: a name that is not short printable text")
    return value


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise BadReport(f"{field}: not a count")
    return value


def _histogram(encoded: Any, field: str) -> HdrHistogram:
    if not isinstance(encoded, (str, bytes)) or len(encoded) > MAX_ENCODED:
        raise BadReport(f"{field}: not an encoded histogram")
    try:
        histogram = HdrHistogram.decode(encoded)
    except (ValueError, TypeError, KeyError, IndexError, binascii.Error, zlib.error) as exc:
        raise BadReport(f"{field}: does not decode ({type(exc).__name__})") from None
    shape = (histogram.lowest_trackable_value, histogram.highest_trackable_value, histogram.significant_figures)
    if shape != (LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES) or histogram.get_total_count() > MAX_COUNT:
        raise BadReport(f"{field}: not a histogram of the recorder's range and precision")
    return histogram


def _cpu(value: Any) -> dict[str, Any]:
    cpu = _mapping(value, "cpu", 32)
    checked: dict[str, Any] = {}
    for key in CPU_TEXTS:
        text = cpu.get(key)
        if not isinstance(text, str) or len(text) > MAX_NAME_LENGTH:
            raise BadReport(f"cpu.{key}: not short text")
        checked[key] = text
    for key in (*CPU_NUMBERS, "pid", *CPU_OPTIONAL):
        number = cpu.get(key)
        if number is None and key in CPU_OPTIONAL:
            checked[key] = None
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or number < 0:
            raise BadReport(f"cpu.{key}: not a number >= 0")
        checked[key] = number
    return checked
