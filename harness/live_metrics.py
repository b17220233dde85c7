"""The run as Prometheus metrics: a ``prometheus_client`` collector over the recorder and the live load.

Counters and histograms come from the recorder's totals (the same HdrHistograms
the result file holds, merged across workers on a master), so a scrape adds
nothing to the per-message path. Latency is a classic Prometheus histogram with
fine buckets: ten per decade from 10 µs to 80 s (the R10 series 1, 1.25, 1.6,
2, 2.5, 3.15, 4, 5, 6.3, 8), the same bounds in every process, so Prometheus
can add several generators' buckets and take quantiles over them
(``histogram_quantile``). A bucket counts the HdrHistogram slots that lie wholly
at or below its bound (slots are 0.1% wide); ``_sum`` adds each slot's middle
value times its count.

HdrHistogram's own iterators are pure Python (about 60 ms for a histogram of
2,500 distinct values): too long to hold a generator's event loop. The counts
array is read instead, by slices (C), against a layout of the slots computed
once per process: about 1 ms a histogram. The caller may pass ``pause``, called
between histograms, to let its loop run.

What is not measured is absent (no sample), never 0: Prometheus shows a gap.
Imports neither Locust nor gevent.
"""

from __future__ import annotations

import functools
import operator
from bisect import bisect_right
from collections.abc import Callable, Iterator

from hdrh.histogram import HdrHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from harness.live import REQUEST_NAMES, Load, Recorded
from harness.results.histogram_file import new_histogram

PREFIX = "swarmbench"
_R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
#: Bucket bounds in µs: 10 µs ... 80 s, ten per decade.
BOUNDS_US = tuple(m * 10**e for e in range(1, 8) for m in _R10)


@functools.cache
def _layout() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For the recorder's histogram shape: per bound, how many leading slots lie wholly at or below it;
    per slot, its middle value (µs). Computed once per process (a few tens of ms)."""
    hist = new_histogram()
    lows = [hist.get_value_from_index(i) for i in range(hist.counts_len)]
    highs = [nxt - 1 for nxt in lows[1:]] + [hist.highest_trackable_value]
    mids = tuple(low + (high - low + 1) // 2 for low, high in zip(lows, highs))
    return tuple(bisect_right(highs, bound) for bound in BOUNDS_US), mids


def prepare() -> None:
    """Compute the slot layout now (before a run starts), not at the first scrape."""
    _layout()


def buckets(hist: HdrHistogram) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` pairs in seconds (``+Inf`` last) and the sum of the values in seconds."""
    ends, mids = _layout()
    counts = hist.counts[: hist.counts_len]
    pairs: list[tuple[str, float]] = []
    below, start = 0, 0
    for bound, end in zip(BOUNDS_US, ends):
        below += sum(counts[start:end])
        start = end
        pairs.append((f"{bound / 1e6:g}", float(below)))
    pairs.append(("+Inf", float(hist.get_total_count())))
    return pairs, sum(map(operator.mul, counts, mids)) / 1e6


class RunCollector:
    """Collects a run's metrics at each scrape from ``source()``: ``(recorder or None, Load or None)``."""

    def __init__(self, source: Callable[[], tuple[Recorded | None, Load | None]],
                 pause: Callable[[], object] = lambda: None) -> None:
        self.source = source
        self.pause = pause

    def collect(self) -> Iterator[Metric]:
        recorded, load = self.source()
        if recorded is not None:
            yield from self.recorded(recorded)
        if load is not None:
            yield from load_metrics(load)

    def recorded(self, recorded: Recorded) -> Iterator[Metric]:
        names = [n for n in REQUEST_NAMES if n in recorded.totals or n in recorded.failures]
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Requests answered, per request name (a message, "
                                       "a connect, a TLS handshake, a session)", labels=["name"])  # fmt: skip
        failures = CounterMetricFamily(f"{PREFIX}_request_failures", "Requests that failed, per name and failure "
                                       "class (the exception's name)", labels=["name", "kind"])  # fmt: skip
        latency = HistogramMetricFamily(f"{PREFIX}_request_duration_seconds", "Latency per request name "
                                        "(open loop: from the intended send time), from µs HdrHistograms",
                                        labels=["name"])  # fmt: skip
        for name in names:
            hist = recorded.totals.get(name)
            requests.add_metric([name], hist.get_total_count() if hist is not None else 0)
            for kind, count in sorted(recorded.failures.get(name, {}).items()):
                failures.add_metric([name, kind], count)
            if hist is not None:
                pairs, total = buckets(hist)
                latency.add_metric([name], pairs, total)
                self.pause()
        yield requests
        yield failures
        yield latency
        lag = recorded.totals.get("loop_lag")
        if lag is not None:
            pairs, total = buckets(lag)
            family = HistogramMetricFamily(f"{PREFIX}_generator_loop_lag_seconds", "How late the generator's "
                                           "event loop ran a due timer (its own share of every latency)")
            family.add_metric([], pairs, total)
            yield family


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def load_metrics(load: Load) -> Iterator[Metric]:
    """Gauges of the load, the generator and the server; none for a figure not measured."""
    yield from _gauge("users", "Users running (Locust's user count)", load.users)
    yield from _gauge("users_established", "Users connected and past their first reply", load.established)
    yield from _gauge("users_unanswered", "Users waiting over 1 s for a reply", load.unanswered)
    yield from _gauge("asked_messages_per_second", "The open loop's asked rate (--rate)", load.asked_rate)
    yield from _gauge("achieved_messages_per_second", "Messages answered per second, last 5 s", load.achieved_rate)
    cpu = GaugeMetricFamily(f"{PREFIX}_generator_cpu_ratio", "A Locust process's CPU over its last second "
                            "(1 = one core)", labels=["process"])  # fmt: skip
    rss = GaugeMetricFamily(f"{PREFIX}_generator_resident_memory_bytes", "A Locust process's resident memory",
                            labels=["process"])  # fmt: skip
    for p in load.processes:
        if p.cpu_percent is not None:
            cpu.add_metric([p.label], p.cpu_percent / 100.0)
        if p.rss_bytes is not None:
            rss.add_metric([p.label], p.rss_bytes)
    if load.processes:
        yield cpu
        yield rss
        yield GaugeMetricFamily(f"{PREFIX}_generator_bound", "1 while the generator measures itself (the "
                                "report's generator-bound mark), else 0", value=1 if load.generator_bound else 0)
    server = load.server
    if server is None:
        return
    yield GaugeMetricFamily(f"{PREFIX}_server_up", "1 while the server process (--server-pid) lives",
                            value=1 if server.alive else 0)  # fmt: skip
    if not server.alive:
        return
    yield from _gauge("server_threads", "The server's threads (its process tree)", server.threads)
    yield from _gauge("server_cpu_ratio", "The server's CPU over the last second (1 = one core)",
                      None if server.cpu_percent is None else server.cpu_percent / 100.0)
    yield from _gauge("server_resident_memory_bytes", "The server's resident memory", server.rss_bytes)
    yield from _gauge("server_connections", "Established connections on the server's port", server.connections)
    yield from _gauge("server_open_fds", "The server's open file descriptors", server.fds)
