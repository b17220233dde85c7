"""Claims of the in-Locust plugin, each checked by a real Locust run: saturation, correction, merging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import assert_counts_match, free_port, run_locust

from harness.machine import SATURATED_PERCENT

pytestmark = pytest.mark.slow

BUSY_USER = """
import time

import gevent
from locust import task

from harness.user import TcpUser


class BusyUser(TcpUser):
    @task
    def burn(self) -> None:
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:  # the generator itself uses the whole core
            pass
        gevent.sleep(0.001)
"""


def test_a_generator_that_uses_its_core_is_marked_saturated(tmp_path: Path) -> None:
    """The mark comes from the process's own CPU between spawning-complete and the stop."""
    locustfile = tmp_path / "busy.py"
    locustfile.write_text(BUSY_USER)
    result = run_locust(locustfile, tmp_path, f"127.0.0.1:{free_port()}", users=1, seconds=5)
    assert result.code == 0, result.output
    generator = result.hdr.generator
    steady = [p["cpu_percent_max_steady"] for p in generator.processes if p["cpu_percent_max_steady"] is not None]
    assert steady, generator
    assert generator.cpu_percent_max == max(steady)
    assert generator.saturated == (max(steady) > SATURATED_PERCENT), generator
    # it did burn (on a quiet machine near 100%, so saturated; a machine shared with other work gives less)
    assert max(steady) > 10, generator
    assert "generator saturated" in result.output or not generator.saturated


def test_open_loop_does_not_overcorrect_when_the_server_keeps_up(start: Any, tmp_path: Path) -> None:
    """Latency from the due time equals latency from the send when sends leave on time.

    Each user is due every 10 ms; a correction that charged the schedule's interval (or
    any backlog that is not there) would add milliseconds to every corrected figure.
    """
    server = start("asyncio", backlog=128)
    result = run_locust("chat.py", tmp_path, server.url, "--rate", "200", "--messages-per-session", "1000",
                        users=2, seconds=4)  # fmt: skip
    assert result.code == 0, result.output
    names = result.hdr.names
    corrected, uncorrected, lag = names["message"], names["message_uncorrected"], names["send_lag"]
    assert corrected.count == uncorrected.count > 100
    # the correction is the sends' own lateness, never the schedule's interval (10 ms) or half of it:
    # a relation between figures of one run, which holds however busy the machine is
    assert corrected.p50_us - uncorrected.p50_us <= lag.p50_us + 2_000, (corrected, uncorrected, lag)


def test_interval_histograms_of_two_workers_add_up_exactly(start: Any, tmp_path: Path) -> None:
    """With --processes 2, the per-second intervals the master merged sum to its totals, name by name."""
    server = start("asyncio", backlog=128)
    result = run_locust("chat.py", tmp_path, server.url, "--processes", "2", "--think-time", "0.01",
                        users=4, seconds=4)  # fmt: skip
    assert result.code == 0, result.output
    hdr = result.hdr
    whole = hdr.window()
    for name in ("connect", "message", "loop_lag"):
        assert whole[name].get_total_count() == hdr.names[name].count > 0, name
    seconds = [iv for iv in hdr.intervals if "message" in iv.histograms]
    assert len(seconds) >= 2  # several seconds to add up (how many a 4 s run has depends on the machine)
    assert sum(hdr.window(iv.t, iv.t + 1)["message"].get_total_count() for iv in seconds) == hdr.names["message"].count
    assert_counts_match(result)  # and the merged seconds count what Locust itself counted, name by name
