"""Microsecond latency histograms and the histogram file: its typed model, loader and windows.

Locust rounds response times under 100 ms to whole milliseconds; a loopback
server answers in tens of microseconds. So every latency is also kept in an
HdrHistogram (1 µs to 60 s, 3 significant digits), one per request name and
wall-clock second (HdrHistogram's interval-log idea): the steady window's
percentiles are the sum of its seconds, and the time lines come from the same
data. The in-Locust side that records them is :mod:`harness.user.recorder`.

Values above ``HIGHEST_US`` (60 s) are recorded as 60 s and counted in
``out_of_range`` ("clamped"): dropping them would lower the percentiles exactly
when a server stalls.

This module imports neither Locust nor gevent: the sweep loads files with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.results.cells import GeneratorStats, Latency
from harness.results.format import HISTOGRAM_KIND, PERCENTILES, ResultError, check_header, header

LOWEST_US = 1
HIGHEST_US = 60_000_000
#: The census of messages with no reply by the window's end (harness.census), once a run...
CENSORED = "message_censored"
#: ... and the messages that failed with no reply, each as its wait until it failed, as they fail.
FAILED = "message_failed"
SIGNIFICANT_FIGURES = 3

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
        summary.update({key: None for key, _, _ in PERCENTILES})
    else:
        summary["min_us"] = hist.get_min_value()
        summary["max_us"] = hist.get_max_value()
        summary["mean_us"] = round(hist.get_mean_value(), 3)
        values = hist.get_percentile_to_value_dict([p for _, _, p in PERCENTILES])
        summary.update({key: values[p] for key, _, p in PERCENTILES})
    summary["out_of_range"] = out_of_range
    return summary


class _Sink(list[bytes]):
    """A bytes file for hdrh's ``output_percentile_distribution`` (it writes str or bytes)."""

    def write(self, text: str | bytes) -> None:
        self.append(text.encode() if isinstance(text, str) else text)


def hgrm_text(hist: HdrHistogram) -> bytes:
    """HdrHistogram's percentile distribution of ``hist`` (values in ms, as its plotter expects): a ``.hgrm`` file."""
    sink = _Sink()
    hist.output_percentile_distribution(sink, 1000)
    return b"".join(sink)


def hgrm_path(path: Path, name: str) -> Path:
    """``results/run.json`` -> ``results/run.message.hgrm``, always beside ``path``.

    A request name comes from a scenario or a worker: anything but letters,
    digits, '_' and '-' is replaced (no '/', no '..'), and a name so changed gets
    a hash of the original, so two names never share a file.
    """
    return path.with_name(f"{path.stem}.{hgrm_name(name)}.hgrm")


def hgrm_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    if clean == name and name:
        return name
    return f"{clean}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


# -- the file ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """One wall-clock second: each name's encoded histogram and its failures."""

    t: int
    histograms: Mapping[str, str] = field(default_factory=dict)
    failures: Failures = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """What the scenario was asked to do, and the rate it achieved."""

    users: int = 0
    rate: float = 0.0  # 0: closed loop
    messages_per_session: int = 0
    message_size: int = 0
    think_time: float = 0.0
    achieved_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class HistogramFile:
    """What one Locust run recorded (all its processes merged), as written by ``--hdr-file``."""

    started_at: float
    ended_at: float
    spawned_at: float | None = None
    stopping_at: float | None = None
    options: LoadSettings = field(default_factory=LoadSettings)
    generator: GeneratorStats = field(default_factory=GeneratorStats)
    names: Mapping[str, Latency] = field(default_factory=dict)  # whole run, per request name
    failures: Failures = field(default_factory=dict)  # whole run
    intervals: tuple[Interval, ...] = ()
    # the phases (harness.user.phases); None in files written before them (schema 1)
    established_at: float | None = None  # every user had its first reply (time.time())
    measure_from: float | None = None  # the window's start: establishment (or its deadline) + settle
    users_established: int | None = None
    users_not_established: int | None = None  # at the stop
    establish_timeout: float | None = None
    settle_s: float | None = None
    window_planned_s: float | None = None  # None: Locust's -t ended the run
    workers_missing_final: tuple[str, ...] = ()  # workers whose final report never came

    def to_dict(self, stem: str = "") -> dict[str, Any]:
        names = {}
        for name, latency in sorted(self.names.items()):
            row: dict[str, Any] = latency.to_dict()
            if stem:
                row["hgrm"] = f"{stem}.{hgrm_name(name)}.hgrm"
            names[name] = row
        return {
            **header(HISTOGRAM_KIND),
            "unit": "us",
            "hgrm_unit": "ms",
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "spawned_at": self.spawned_at,
            "stopping_at": self.stopping_at,
            "generator": self.generator.to_dict(),
            "options": _plain(self.options),
            "names": names,
            "failures": self.failures,
            "intervals": [{"t": iv.t, "histograms": dict(iv.histograms), "failures": iv.failures} for iv in self.intervals],
            "established_at": self.established_at,
            "measure_from": self.measure_from,
            "users_established": self.users_established,
            "users_not_established": self.users_not_established,
            "establish_timeout": self.establish_timeout,
            "settle_s": self.settle_s,
            "window_planned_s": self.window_planned_s,
            "workers_missing_final": list(self.workers_missing_final),
        }

    def to_json(self, stem: str = "") -> bytes:
        return (json.dumps(self.to_dict(stem), indent=1) + "\n").encode()

    @classmethod
    def from_dict(cls, data: Any) -> HistogramFile:
        check_header(data, HISTOGRAM_KIND)
        try:
            options = data.get("options") or {}
            return cls(
                started_at=_finite(data["started_at"]),
                ended_at=_finite(data["ended_at"]),
                spawned_at=_optional(data.get("spawned_at")),
                stopping_at=_optional(data.get("stopping_at")),
                options=LoadSettings(**{k: _setting(options[k], LoadSettings.__dataclass_fields__[k].default)
                                         for k in LoadSettings.__dataclass_fields__ if k in options}),
                generator=GeneratorStats.from_dict(data.get("generator") or {}),
                names={str(k): Latency.from_dict(v) for k, v in (data.get("names") or {}).items()},
                failures=_failures(data.get("failures") or {}),
                intervals=tuple(
                    Interval(int(row["t"]), {str(k): str(v) for k, v in row.get("histograms", {}).items()},
                             _failures(row.get("failures") or {}))
                    for row in data.get("intervals") or ()
                ),
                established_at=_optional(data.get("established_at")),
                measure_from=_optional(data.get("measure_from")),
                users_established=_optional_count(data.get("users_established")),
                users_not_established=_optional_count(data.get("users_not_established")),
                establish_timeout=_optional(data.get("establish_timeout")),
                settle_s=_optional(data.get("settle_s")),
                window_planned_s=_optional(data.get("window_planned_s")),
                workers_missing_final=tuple(str(w) for w in data.get("workers_missing_final") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ResultError(f"malformed histogram file: {exc.__class__.__name__}: {exc}") from None

    # -- windows of seconds ------------------------------------------------------------
    def _in_window(self, t0: float, t1: float) -> Iterable[Interval]:
        return (row for row in self.intervals if t0 <= row.t < t1)

    def window(self, t0: float = 0, t1: float = math.inf) -> dict[str, HdrHistogram]:
        """Per name, the sum of the intervals with ``t0 <= t < t1`` (epoch seconds)."""
        result: dict[str, HdrHistogram] = {}
        for row in self._in_window(t0, t1):
            for name, encoded in row.histograms.items():
                hist = decode(encoded)
                if name in result:
                    add_into(result[name], hist)
                else:
                    result[name] = hist
        return result

    def window_failures(self, t0: float = 0, t1: float = math.inf) -> Failures:
        """Per name and failure class, the failures in the intervals with ``t0 <= t < t1``."""
        result: Failures = {}
        for row in self._in_window(t0, t1):
            add_failures(result, row.failures)
        return result


def decode(encoded: str) -> HdrHistogram:
    try:
        return HdrHistogram.decode(encoded)
    except Exception as exc:  # hdrh raises plain Exceptions and zlib/base64 errors on bad input
        raise ResultError(f"malformed histogram file: an interval does not decode ({exc.__class__.__name__})") from None


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _setting(value: Any, default: float) -> float:
    """A load setting, of its default's type (an int stays an int)."""
    if isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"options: not a whole number: {str(value)[:40]!r}")
    return _finite(value) if isinstance(default, float) else value


def _optional(value: Any) -> float | None:
    return None if value is None else _finite(value)


def _optional_count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {str(value)[:40]!r}")
    return value


def _failures(data: Mapping[str, Any]) -> Failures:
    return {str(name): {str(kind): int(count) for kind, count in kinds.items()} for name, kinds in data.items()}


def load_histogram_file(path: str | os.PathLike[str]) -> HistogramFile:
    """The file's model; a one-line :class:`ResultError` naming the file when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON, a 5,000-digit number
        raise ResultError(f"{path}: not a readable histogram file ({exc.__class__.__name__})") from None
    try:
        return HistogramFile.from_dict(data)
    except ResultError as exc:
        raise ResultError(f"{path}: {exc}") from None
