"""Real Locust runs (subprocesses) of the scenarios against the threaded server on a free port.

What Locust itself reports of such runs (its request event, tables, files, web UI): test_locust_reports.py.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import ROOT, RUN_TIMEOUT, assert_counts_match, free_port, kill_group, locust_argv, run_locust

from harness.results.histogram_file import summarize
from harness.server_process import RunningServer

pytestmark = pytest.mark.slow

def server_threads(server: RunningServer) -> int:
    return psutil.Process(server.pid).num_threads()


def settled_threads(server: RunningServer, timeout: float = 30.0) -> int:
    """The server's thread count once it has not changed for 0.3 s (start-up probe connections gone)."""
    deadline = time.monotonic() + timeout
    last, same = server_threads(server), 0
    while same < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
        n = server_threads(server)
        same = same + 1 if n == last else 0
        last = n
    return last


def wait_threads(server: RunningServer, idle: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (n := server_threads(server)) > idle and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


@pytest.fixture
def server(start: Any) -> RunningServer:
    return start("threaded", backlog=128)


def test_chat_headless_counts_and_clean_quits(start: Any, tmp_path: Path) -> None:
    server = start("threaded", backlog=128, log_level="INFO")  # INFO: the server logs each close and reset
    idle = settled_threads(server)
    result = run_locust("chat.py", tmp_path, server.url, "--think-time", "0.002", users=5)
    assert result.code == 0, result.output
    assert "Traceback" not in result.output
    hdr = result.hdr
    assert hdr.failures == {}
    assert_counts_match(result)
    message = hdr.names["message"]
    assert message.count > 100 and 0 < message.p50_us <= message.p99_us <= message.max_us
    assert set(hdr.names) >= {"connect", "message", "session", "loop_lag"}
    assert hdr.names["loop_lag"].count > 0
    assert all("loop_lag" in row.histograms for row in hdr.intervals[1:-1])  # every whole second
    assert (tmp_path / "hdr.message.hgrm").read_text().startswith("       Value")
    # the per-second intervals add up to the totals
    whole = hdr.window()
    assert whole["message"].get_total_count() == message.count
    assert summarize(whole["message"])["p50_us"] == message.p50_us
    assert hdr.generator.processes[0]["role"] == "local"
    # every user quit: the server's per-connection threads are gone
    assert wait_threads(server, idle) <= idle
    log = server.log_text()
    assert "Client is requesting to quit" in log and " lost: " not in log


def test_processes_2_merges_counts(server: RunningServer, tmp_path: Path) -> None:
    result = run_locust("chat.py", tmp_path, server.url, "--processes", "2", users=4)
    assert result.code == 0, result.output
    assert_counts_match(result)
    roles = sorted(p["role"] for p in result.hdr.generator.processes)
    assert roles == ["master", "worker", "worker"]


def test_master_and_one_worker(server: RunningServer, tmp_path: Path) -> None:
    port = free_port()
    worker = subprocess.Popen(
        locust_argv("chat.py", "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        result = run_locust(
            "chat.py", tmp_path, server.url, "--master", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(port), "--expect-workers", "1", users=3,
        )  # fmt: skip
        assert result.code == 0, result.output
        assert_counts_match(result)
        assert result.hdr.names["message"].count > 100
        worker.wait(timeout=15)
    finally:
        kill_group(worker)


def test_open_loop_rate(server: RunningServer, tmp_path: Path) -> None:
    result = run_locust("chat.py", tmp_path, server.url, "--rate", "400", users=5, seconds=4)
    assert result.code == 0, result.output
    hdr = result.hdr
    assert "achieved" in result.output
    assert {"message_uncorrected", "send_lag"} <= set(hdr.names)
    assert hdr.names["message_uncorrected"].count == hdr.names["message"].count
    assert_counts_match(result)
    # no speed is asserted (a loaded machine may fall short); a schedule never runs ahead of its rate
    assert hdr.options.rate == 400
    assert 0 < hdr.options.achieved_rate <= 400 * 1.02, hdr.options.achieved_rate


def test_open_loop_corrects_coordinated_omission(start: Any, tmp_path: Path) -> None:
    """Each reply takes 20 ms, each user is asked for one every 10 ms: the schedule falls behind.

    Latency from the intended send time grows with the backlog (wrk2's correction);
    from the actual send it stays near 20 ms. Equal figures would mean no correction.
    """
    server = start("threaded", backlog=128, entry=(str(ROOT / "tests" / "slow_server.py"),), extra_args=["--delay-ms", "20"])
    result = run_locust("chat.py", tmp_path, server.url, "--rate", "200", "--messages-per-session", "1000", users=2, seconds=3)
    assert result.code == 0, result.output
    names = result.hdr.names
    corrected, uncorrected = names["message"], names["message_uncorrected"]
    assert corrected.count == uncorrected.count > 10
    assert uncorrected.p50_us >= 20_000  # the server's delay
    assert corrected.p99_us > 5 * uncorrected.p99_us, (corrected, uncorrected)
    assert names["send_lag"].p99_us > 100_000  # sends left their schedule behind
    assert_counts_match(result)


STALLING_USER = """
import time

from locust import constant, task

from harness.user import TcpUser


class StallingUser(TcpUser):
    wait_time = constant(0.5)

    @task
    def stall(self) -> None:
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:  # holds the gevent hub for 50 ms
            pass
"""


def test_loop_lag_sees_a_held_hub(tmp_path: Path) -> None:
    """The per-process loop-lag probe shows a generator that holds its hub (no server needed)."""
    locustfile = tmp_path / "stall.py"
    locustfile.write_text(STALLING_USER)
    result = run_locust(str(locustfile), tmp_path, f"127.0.0.1:{free_port()}", users=1, seconds=2)
    assert result.code == 0, result.output
    lag = result.hdr.names["loop_lag"]
    # the probe ran all along (how often depends on how busy the machine is: a count, not a rate) ...
    assert lag.count > 10, lag
    assert lag.max_us >= 40_000, lag  # ... and a probe due during a 50 ms stall woke at its end
    assert lag.p50_us < lag.max_us


@pytest.mark.parametrize("scenario", ["churn.py", "slow.py", "abrupt.py"])
def test_other_scenarios_run_clean(server: RunningServer, tmp_path: Path, scenario: str) -> None:
    idle = settled_threads(server)
    result = run_locust(scenario, tmp_path, server.url, users=4)
    assert result.code == 0, result.output
    assert result.hdr.failures == {}
    assert result.hdr.names["message"].count > 0
    assert_counts_match(result)
    assert wait_threads(server, idle) <= idle
    assert server.alive()


def test_abrupt_leaves_by_close_and_reset(start: Any, tmp_path: Path) -> None:
    server = start("threaded", backlog=128, log_level="INFO")
    result = run_locust("abrupt.py", tmp_path, server.url, users=2, seconds=2)
    assert result.code == 0, result.output
    log = server.log_text()
    assert "lost: ConnectionResetError" in log  # the resets
    # sessions end only by --quit--: abrupt users never quit, so only the 2 users still connected at the stop can
    sessions = result.hdr.names["session"].count if "session" in result.hdr.names else 0
    assert sessions <= 2
    assert " closed" in log  # the closes


def test_nobody_listening_counts_connect_failures(tmp_path: Path) -> None:
    result = run_locust("chat.py", tmp_path, f"127.0.0.1:{free_port()}", users=2, seconds=2)
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    refused = result.hdr.failures["connect"]["ConnectRefused"]
    assert refused == result.locust["connect"]["num_failures"] > 0
    assert result.hdr.window_failures()["connect"]["ConnectRefused"] == refused


@pytest.mark.parametrize(
    ("host", "needle"),
    [("tcp://127.0.0.1:notaport", "malformed host"), ("http://127.0.0.1:8000", "malformed host"),
     ("tcp://::1:8000", "IPv6 addresses go in brackets: [::1]:PORT")],
)  # fmt: skip
def test_bad_host_is_one_line(host: str, needle: str) -> None:
    proc = subprocess.run(
        locust_argv("chat.py", "--headless", "-t", "1s", "--host", host),
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the plugin's exit for a bad option (harness.user.plugin)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_message_size_over_limit_is_one_line() -> None:
    proc = subprocess.run(
        locust_argv("chat.py", "--headless", "-t", "1s", "--message-size", "6000"),
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "error: --message-size must be 1..5120" in proc.stderr
