"""The master's check of a worker's report: payloads in, verdicts out (no Locust, no sockets).

The whole path (a process that never registered sends a stats message to a real master) is in
tests/test_worker.py.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from harness.results.histogram_file import new_histogram
from harness.results.worker_report import BadReport, check_report


TOKEN = "f00dfeed"
NOW = time.time()


def encoded(*values: int, histogram: HdrHistogram | None = None) -> bytes:
    made = histogram or new_histogram()
    for value in values:
        made.record_value(value)
    return made.encode()


def payload() -> dict[str, Any]:
    second = str(int(NOW))
    return {
        "token": TOKEN,
        "report": {"intervals": {second: {"message": encoded(120, 130, 140)}},
                   "failures": {second: {"message": {"ReplyTimeout": 2}}}, "out_of_range": {"message": 0}},
        "cpu": {"role": "worker", "pid": 4242, "host": "vm", "cpu_percent_mean": 12.5, "cpu_percent_max": 20.0,
                "cpu_percent_max_steady": None, "cpu_seconds": 0.5, "samples": 4, "users_max": 3,
                "rss_bytes_max": 1 << 20, "nofile_limit": 20000},
        "established": 3, "final": False,
    }  # fmt: skip


def check(data: Any) -> Any:
    return check_report(data, TOKEN, NOW - 10, NOW)


def test_a_well_formed_report_is_decoded_whole() -> None:
    report = check(payload())
    (second, row), = report.recording.intervals.items()
    assert second == int(NOW) and row["message"].get_total_count() == 3
    assert report.recording.failures == {int(NOW): {"message": {"ReplyTimeout": 2}}}
    assert report.established == 3 and report.final is False and report.cpu["pid"] == 4242


def bad(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(payload())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


SECOND = str(int(NOW))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("stats", "not a mapping"),
        (bad(("token",), "stale"), "token"),
        ({k: v for k, v in payload().items() if k != "token"}, "token"),
        (bad(("report",), ["x"]), "report: not a mapping"),
        (bad(("report", "intervals"), {"soon": {}}), "not a second of this run"),
        (bad(("report", "intervals"), {str(int(NOW) + 86_400): {}}), "not a second of this run"),
        (bad(("report", "intervals", SECOND, "message"), b"not a histogram"), "does not decode"),
        (bad(("report", "intervals", SECOND, "message"), "HISTFAAAAB"), "does not decode"),
        (bad(("report", "intervals", SECOND, "message"), encoded(5, histogram=HdrHistogram(1, 60_000_000, 2))),
         "range and precision"),
        (bad(("report", "intervals", SECOND), {f"n{i}": encoded(1) for i in range(65)}), "more than 64"),
        (bad(("report", "intervals", SECOND), {"\x1b[2Jforged": encoded(1)}), "printable"),
        (bad(("report", "failures", SECOND, "message", "ReplyTimeout"), -1), "not a count"),
        (bad(("report", "failures", SECOND, "message", "ReplyTimeout"), True), "not a count"),
        (bad(("report", "out_of_range", "message"), "lots"), "not a count"),
        (bad(("cpu",), "busy"), "cpu: not a mapping"),
        (bad(("cpu", "cpu_percent_max"), float("nan")), "cpu.cpu_percent_max"),
        (bad(("cpu", "host"), None), "cpu.host"),
        (bad(("established",), -3), "established"),
        (bad(("final",), "yes"), "final"),
    ],
)  # fmt: skip
def test_a_report_wrong_in_any_field_is_refused_in_one_line(data: Any, says: str) -> None:
    with pytest.raises(BadReport, match=says) as caught:
        check(data)
    assert "\n" not in str(caught.value)
