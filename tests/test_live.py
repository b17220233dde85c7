"""The live view's figures and metrics, from histograms in to rows and exposition text out (no Locust, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from harness.live import (
    MASTER_LAG_S, MISSING, Load, Process, Server, achieved_rate, latency_rows, request_figures, state_rows, window_end,
)  # fmt: skip
from harness.live_metrics import BOUNDS_US, RunCollector, buckets
from harness.results.histogram_file import HIGHEST_US, Failures, add_into, encode, new_histogram
from harness.results.worker_report import BadReport, check_report

T0 = 1_800_000_000  # a second of the run


def hist(*pairs: tuple[int, int]) -> HdrHistogram:
    h = new_histogram()
    for value, count in pairs:
        h.record_value(value, count)
    return h


@dataclass
class Recorded:
    """What a recorder holds, built by hand: closed seconds and totals (harness.live.Recorded)."""

    intervals: dict[int, dict[str, str]] = field(default_factory=dict)
    interval_failures: dict[int, Failures] = field(default_factory=dict)
    totals: dict[str, HdrHistogram] = field(default_factory=dict)
    failures: Failures = field(default_factory=dict)
    per_second: dict[str, dict[int, int]] = field(default_factory=dict)

    def add(self, second: int, name: str, h: HdrHistogram, failures: dict[str, int] | None = None) -> None:
        self.intervals.setdefault(second, {})[name] = encode(h)
        add_into(self.totals.setdefault(name, new_histogram()), h)
        counts = self.per_second.setdefault(name, {})
        counts[second] = counts.get(second, 0) + h.get_total_count()
        if failures:
            self.interval_failures.setdefault(second, {})[name] = failures
            row = self.failures.setdefault(name, {})
            for kind, n in failures.items():
                row[kind] = row.get(kind, 0) + n


def ten_seconds() -> Recorded:
    """Ten seconds of messages: 60 µs each for eight seconds, then two seconds at 5 ms (the recent stretch's p99)."""
    rec = Recorded()
    for t in range(T0, T0 + 10):
        slow = t >= T0 + 8
        rec.add(t, "message", hist((5000 if slow else 60, 100)), {"ConnectionResetError": 1} if t == T0 + 9 else None)
    rec.add(T0, "connect", hist((150, 10)))
    return rec


def test_the_recent_stretch_and_the_whole_run_in_microseconds() -> None:
    rec = ten_seconds()
    rows = {(f.name, f.stretch): f for f in request_figures(rec, T0 + 9)}
    recent, whole = rows[("message", "last 5 s")], rows[("message", "since start")]
    assert (recent.count, recent.seconds, recent.failures) == (500, 5, 1)
    assert recent.p50_us == 60 and 4995 <= recent.p99_us <= 5005  # 2 of 5 seconds at 5 ms
    assert (whole.count, whole.seconds, whole.failures) == (1000, 10, 1)
    assert whole.p50_us == 60 and whole.rate == pytest.approx(100.1)
    assert rows[("connect", "last 5 s")].count == 0 and rows[("connect", "last 5 s")].p99_us is None
    assert rows[("connect", "since start")].p99_us == 150
    assert [f.name for f in request_figures(rec, T0 + 9)][::2] == ["message", "connect"]  # REQUEST_NAMES order


def test_rows_show_microseconds_and_a_dash_for_what_was_not_measured() -> None:
    rec = ten_seconds()
    rows = latency_rows(request_figures(rec, T0 + 9))
    message = next(r for r in rows if r["name"] == "message" and r["stretch"] == "since start")
    assert message["p50"] == "60" and message["count"] == "1,000" and message["failures"] == "1"
    connect_recent = next(r for r in rows if r["name"] == "connect" and r["stretch"] == "last 5 s")
    assert connect_recent["p99"] == MISSING and connect_recent["max"] == MISSING and connect_recent["count"] == "0"
    assert all(key.isalnum() for row in rows for key in row)  # the web UI camel-cases keys: single words only


def test_a_max_at_the_histograms_ceiling_is_a_bound() -> None:
    rec = Recorded()
    rec.add(T0, "message", hist((HIGHEST_US, 1), (100, 99)))
    row = latency_rows(request_figures(rec, T0))[1]
    assert row["max"].startswith("≥ ")


def test_the_window_ends_behind_a_masters_clock_and_stays_where_the_run_stopped() -> None:
    now = T0 + 100.5
    assert window_end(now, master=False, stopped_at=None) == T0 + 99
    assert window_end(now, master=True, stopped_at=None) == T0 + 99 - MASTER_LAG_S
    assert window_end(now, master=False, stopped_at=T0 + 50.7) == T0 + 50
    rec = ten_seconds()
    assert achieved_rate(rec, T0 + 9) == 100.0
    assert achieved_rate(rec, T0 + 11) == pytest.approx(60.0)  # two seconds with nothing count
    assert achieved_rate(Recorded(), T0) is None


def test_the_run_table_shows_missing_figures_as_missing() -> None:
    rows = dict((r["name"], r["value"]) for r in state_rows(Load("running", 10, 10, 0, None, 123.4)))
    assert rows["asked rate (msg/s)"] == MISSING  # a closed loop asks no rate
    assert rows["achieved rate (msg/s)"] == "123.4" and rows["users unanswered (waiting > 1 s)"] == "0"
    assert rows["server threads"] == MISSING and rows["server PID"] == MISSING and rows["generator"] == MISSING
    load = Load("stopped", 0, 10, 3, 1000.0, 990.0, (Process("local", 95.0, 50 * 2**20),), 2000,
                "a Locust process used 95% of a core (over 90%)", Server(42, True, 7, 12.4, 2**20, 9, 10))
    rows = dict((r["name"], r["value"]) for r in state_rows(load))
    assert rows["generator"] == "generator-bound: a Locust process used 95% of a core (over 90%)"
    assert rows["server threads"] == "7" and rows["server CPU (of one core)"] == "12%"
    assert rows["generator local memory"] == "50.0 MiB" and rows["generator loop lag p99 (µs)"] == "2,000"


def brute_force(h: HdrHistogram, bound_us: float) -> int:
    """Values at or below ``bound_us``, from HdrHistogram's own (slow) iterator: the reference."""
    return sum(item.count_at_value_iterated_to for item in h.get_recorded_iterator()
               if item.value_iterated_to <= bound_us)  # fmt: skip


def test_buckets_agree_with_hdrhistograms_own_iterator() -> None:
    h = hist((7, 3), (10, 5), (12, 1), (13, 2), (60, 100), (999, 4), (1000, 6), (1001, 1), (2_500_000, 2),
             (HIGHEST_US, 1))  # fmt: skip
    pairs, total = buckets(h)
    assert [le for le, _ in pairs][-1] == "+Inf" and len(pairs) == len(BOUNDS_US) + 1
    for (le, count), bound in zip(pairs, BOUNDS_US):
        assert float(le) == pytest.approx(bound / 1e6)
        assert count == brute_force(h, bound), le
    assert pairs[-1][1] == h.get_total_count()
    assert [c for _, c in pairs] == sorted(c for _, c in pairs)  # cumulative
    exact = 7 * 3 + 10 * 5 + 12 + 13 * 2 + 60 * 100 + 999 * 4 + 1000 * 6 + 1001 + 2_500_000 * 2 + HIGHEST_US
    assert total == pytest.approx(exact / 1e6, rel=1e-3)  # slot middles: HdrHistogram's 0.1%


def exposition(rec: Recorded | None, load: Load | None) -> dict[str, list]:  # type: ignore[type-arg]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(lambda: (rec, load)))
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_parse_with_prometheus_clients_own_parser() -> None:
    rec = ten_seconds()
    rec.add(T0, "loop_lag", hist((80, 500)))
    families = exposition(rec, Load("running", 10, 10, 0, 100.0, 99.0, (Process("local", 40.0, 2**20),), 90))
    requests = {s.labels["name"]: s.value for s in families["swarmbench_requests"] if s.name.endswith("_total")}
    assert requests == {"message": 1000, "connect": 10}
    failures = [(s.labels, s.value) for s in families["swarmbench_request_failures"] if s.name.endswith("_total")]
    assert failures == [({"name": "message", "kind": "ConnectionResetError"}, 1)]
    latency = families["swarmbench_request_duration_seconds"]
    count = next(s.value for s in latency if s.name.endswith("_count") and s.labels["name"] == "message")
    le_60us = next(s.value for s in latency if s.labels.get("le") == "6.3e-05" and s.labels["name"] == "message")
    assert count == 1000 and le_60us == 800
    assert "swarmbench_generator_loop_lag_seconds" in families
    assert families["swarmbench_asked_messages_per_second"][0].value == 100.0
    assert families["swarmbench_generator_cpu_ratio"][0].value == pytest.approx(0.4)


def test_a_figure_not_measured_is_absent_not_zero() -> None:
    families = exposition(None, Load("ready", 0, None, None, None, None))
    assert "swarmbench_users" in families and families["swarmbench_users"][0].value == 0
    for absent in ("swarmbench_users_established", "swarmbench_asked_messages_per_second", "swarmbench_server_up",
                   "swarmbench_server_threads", "swarmbench_generator_cpu_ratio", "swarmbench_requests"):
        assert absent not in families
    dead = exposition(None, Load("running", 1, 1, 0, None, None, server=Server(42, False, None, None, None, None, None)))
    assert dead["swarmbench_server_up"][0].value == 0 and "swarmbench_server_threads" not in dead


def worker_payload(**extra: object) -> dict[str, object]:
    cpu = {"role": "worker", "host": "h", "pid": 1, "cpu_percent_mean": 1.0, "cpu_percent_max": 1.0,
           "cpu_seconds": 0.1, "samples": 1, "users_max": 1, "rss_bytes_max": 1, "nofile_limit": 1024,
           "cpu_percent_max_steady": None}  # fmt: skip
    return {"token": "t", "report": {}, "cpu": cpu, "established": 1, "final": False, **extra}


def test_a_workers_stalled_count_and_live_cpu_are_checked() -> None:
    assert check_report(worker_payload(), "t", T0, T0 + 1).stalled == 0  # an older worker sends none
    assert check_report(worker_payload(stalled=3), "t", T0, T0 + 1).stalled == 3
    for bad in (-1, True, "3", 2**41):
        with pytest.raises(BadReport, match="stalled: not a count"):
            check_report(worker_payload(stalled=bad), "t", T0, T0 + 1)
    payload = worker_payload()
    payload["cpu"]["cpu_percent_now"] = float("nan")  # type: ignore[index]
    with pytest.raises(BadReport, match="cpu.cpu_percent_now"):
        check_report(payload, "t", T0, T0 + 1)
