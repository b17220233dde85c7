"""What Locust itself shows of a run (subprocesses against the threaded server on a free port).

Its request event, console table, ``--csv``/``--json``/``--html`` and web UI count what
the histograms count: successes reach Locust in batches (harness.user.stats), and a
listener of Locust's own must not be able to tell. Split from test_tcp_user.py, which
runs the scenarios and users.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, RUN_TIMEOUT, assert_counts_match, forked_call, free_port, locust_argv, run_locust

from harness.server_process import RunningServer

pytestmark = pytest.mark.slow


@pytest.fixture
def server(start: Any) -> RunningServer:
    return start("threaded", backlog=128)


LISTENER = """
import json
import os

import gevent
from locust import events

import scenarios.chat as chat

COUNT = {"ok": 0, "base": None}


class CountedChatUser(chat.ChatUser):
    pass


def count(name, exception=None, **_kw):
    if name == "message" and exception is None:
        COUNT["ok"] += 1


@events.test_start.add_listener
def _start(environment, **_kw):
    def add():
        # successes reach Locust's stats once a second (harness.user.stats.LocustBatch): flushing the
        # recorder brings them up to now; nothing runs between here and add_listener (no yield)
        environment.swarmbench.current_run().recorder.flush()
        entry = environment.stats.get("message", "tcp")
        COUNT["base"] = entry.num_requests - entry.num_failures  # what the listener cannot have seen
        environment.events.request.add_listener(count)

    if os.environ["ADD_LISTENER"] == "test_start":
        add()
    else:
        gevent.spawn_later(1.0, add)  # the users' clients exist by then


@events.test_stop.add_listener
def _stop(environment, **_kw):
    entry = environment.stats.get("message", "tcp")
    with open(os.environ["COUNTS_FILE"], "w") as f:
        json.dump({**COUNT, "locust_ok": entry.num_requests - entry.num_failures}, f)
"""


@pytest.mark.parametrize("when", ["test_start", "mid_run"])
def test_request_listener_added_later_sees_every_message(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A locustfile's own ``request`` listener, added at test_start or mid-run, sees each later success."""
    locustfile, counts_file = tmp_path / "counted.py", tmp_path / "counts.json"
    locustfile.write_text(LISTENER)
    monkeypatch.setenv("COUNTS_FILE", str(counts_file))
    monkeypatch.setenv("ADD_LISTENER", when)
    result = run_locust(str(locustfile), tmp_path, server.url, users=3, seconds=3)
    assert result.code == 0, result.output
    counts = json.loads(counts_file.read_text())
    assert counts["locust_ok"] == result.hdr.names["message"].count
    if when == "test_start":
        assert counts["base"] == 0
    else:
        assert counts["locust_ok"] > counts["base"] > 0, counts  # added while messages flowed
    assert counts["ok"] == counts["locust_ok"] - counts["base"], counts
    assert_counts_match(result)


@pytest.fixture
def web_ui(server: RunningServer) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        locust_argv("chat.py", "--web-host", "127.0.0.1", "--web-port", str(port), "--host", server.url),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_web_ui_lists_the_options(web_ui: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(web_ui, timeout=2) as resp:
                page = resp.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for option in ("messages_per_session", "message_size", "think_time", "rate", "hdr_file"):
        assert option in page, option


QUITTERS = """
from locust import task

from harness.user import TcpUser
from scenarios.chat import ChatUser


class Quitter(TcpUser):
    weight = 1

    @task
    def quit_early(self) -> None:
        self.connect()
        if self.send_messages(300):
            self.client.messages(1, b"--quit--")  # the server closes: a ClosedByServer failure


class Chatter(ChatUser):
    weight = 2
"""


def _locust_percentile(response_times: dict[int, int], count: int, percent: float) -> int:
    def percentile() -> int:
        from locust.stats import calculate_response_time_percentile

        return calculate_response_time_percentile(response_times, count, percent)

    return forked_call(percentile)  # importing locust here would patch the pytest process


def _locust_buckets(encoded_hist: Any) -> dict[int, int]:
    """The histogram's values bucketed as Locust buckets a response time (ms, its own rounding)."""

    def buckets() -> dict[int, int]:
        from locust.stats import bucket_response_time

        counts: dict[int, int] = {}
        for item in encoded_hist.get_recorded_iterator():
            key = bucket_response_time(item.value_iterated_to / 1000)
            counts[key] = counts.get(key, 0) + item.count_at_value_iterated_to
        return counts

    return forked_call(buckets)


def _message_count(row: Any) -> int:
    from hdrh.histogram import HdrHistogram

    encoded = row.histograms.get("message")
    return HdrHistogram.decode(encoded).get_total_count() if encoded else 0


def test_locust_reports_match_the_histograms(server: RunningServer, tmp_path: Path) -> None:
    """Console table, --csv, --json and --html count what the histograms count (successes arrive in batches)."""
    locustfile = tmp_path / "quitters.py"
    locustfile.write_text(QUITTERS)
    csv_prefix, html = tmp_path / "stats", tmp_path / "report.html"
    result = run_locust(str(locustfile), tmp_path, server.url, "--csv", str(csv_prefix), "--html", str(html),
                        users=6, seconds=3)  # fmt: skip
    assert result.code == 1, result.output  # the quitters' failures
    assert_counts_match(result)  # --json: every name's requests and failures
    hdr = result.hdr
    closed = hdr.failures["message"]["ClosedByServer"]
    assert closed > 0 and result.locust["message"]["num_failures"] == closed
    whole = hdr.window()["message"]
    message = result.locust["message"]
    successes = whole.get_total_count()
    assert successes == hdr.names["message"].count > 1000
    # Locust's own distribution of the successes (failures add their own, measured at the failure)
    buckets = _locust_buckets(whole)
    locust_times = {int(k): v for k, v in message["response_times"].items()}
    assert sum(locust_times.values()) == message["num_requests"]
    # every success is in Locust's distribution once (the failures add theirs, measured at the failure)
    assert sum(locust_times.values()) - closed == sum(buckets.values())
    # percentiles: Locust's, from its --json data, against the histogram's after Locust's rounding;
    # the few failures (< 2 % here) may move a percentile by one bucket at most
    assert closed < 0.02 * successes
    csv_rows = {row["Name"]: row for row in csv.DictReader((tmp_path / "stats_stats.csv").open())}
    report = json.loads(re.search(r"window\.templateArgs = (\{.*?\})\s*\n", html.read_text()).group(1))
    html_rows = {row["name"]: row for row in report["requests_statistics"]}
    for name in ("connect", "message", "session", "Aggregated"):
        assert html_rows[name]["num_requests"] == (result.locust[name]["num_requests"] if name in result.locust
                                                   else sum(e["num_requests"] for e in result.locust.values()))
    # Locust writes its CSV once a second and not again at exit (stock Locust too): it may miss the last ~2 s
    tail = sum(_message_count(row) for row in hdr.intervals[-3:])
    csv_message = int(csv_rows["message"]["Request Count"])
    assert message["num_requests"] - closed - tail <= csv_message <= message["num_requests"], (csv_message, tail)
    for percent, column in ((0.5, "50%"), (0.9, "90%"), (0.99, "99%")):
        mine = _locust_percentile(buckets, successes, percent)
        for theirs in (_locust_percentile(locust_times, message["num_requests"], percent), int(csv_rows["message"][column]),
                       html_rows["message"][f"response_time_percentile_{percent}"] if percent in (0.95, 0.99) else None):
            if theirs is not None:
                assert abs(theirs - mine) <= max(1, 0.1 * mine), (percent, theirs, mine)
    assert message["max_response_time"] >= whole.get_max_value() / 1000 * 0.99
    assert message["min_response_time"] <= whole.get_min_value() / 1000 * 1.01 + 0.001
    total_ms = sum(i.value_iterated_to * i.count_at_value_iterated_to for i in whole.get_recorded_iterator()) / 1000
    assert message["total_response_time"] >= total_ms * 0.99


def test_console_table_matches_the_histograms(server: RunningServer, tmp_path: Path) -> None:
    """Locust's console summary (printed when no --json-file is asked) counts what the histograms count."""
    hdr_file = tmp_path / "hdr.json"
    proc = subprocess.run(
        locust_argv("chat.py", "--headless", "-u", "4", "-r", "100", "-t", "2s", "--host", server.url,
                    "--only-summary", "--hdr-file", str(hdr_file)),
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from harness.results.histogram_file import load_histogram_file

    count = load_histogram_file(hdr_file).names["message"].count
    rows = [line.split() for line in (proc.stdout + proc.stderr).splitlines() if re.match(r"\s*tcp\s+message\s", line)]
    assert rows, proc.stderr[-2000:]
    assert int(rows[0][2]) == count, (rows[0], count)  # Type Name #reqs #fails ...


@pytest.mark.forked
def test_batch_logs_as_locust_logs_each_message() -> None:
    """One cut through LocustBatch leaves Locust's entry as StatsEntry.log per message would (pure, no socket)."""
    from collections import Counter

    from locust.stats import RequestStats

    from harness.user.stats import LocustBatch

    values = [120, 480, 500, 501, 1499, 2500, 2501, 73_000, 120, 999_999]
    fired = [480]  # reported through fire: Locust logged it already
    per_message, batched = RequestStats(), RequestStats()
    for value in values:
        per_message.log_request("tcp", "message", value / 1000, 1)
    batch = LocustBatch(batched)
    batch.fired.extend(fired)
    batched.log_request("tcp", "message", 480 / 1000, 1)  # what fire did for it
    cut = batch.cut(int(time.time()))
    items = list(Counter(values).items())
    batch.add(cut, items[:3])
    batch.add(cut, items[3:])
    batch.done(cut)
    for a, b in ((per_message.total, batched.total), (per_message.get("message", "tcp"), batched.get("message", "tcp"))):
        assert (a.num_requests, a.num_none_requests, a.total_content_length) == (b.num_requests, b.num_none_requests, b.total_content_length)
        assert dict(a.response_times) == dict(b.response_times)
        assert (a.min_response_time, a.max_response_time) == (b.min_response_time, b.max_response_time)
        assert abs(a.total_response_time - b.total_response_time) < 1e-6
        assert sum(a.num_reqs_per_sec.values()) == sum(b.num_reqs_per_sec.values())
        assert a.get_response_time_percentile(0.99) == b.get_response_time_percentile(0.99)
