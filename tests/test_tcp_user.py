"""Real Locust runs (subprocesses) of the scenarios against the threaded server on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import free_port

from harness.histograms import load_histogram_file, summarize, window, window_failures
from harness.servers import RunningServer

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 60


def locust_argv(scenario: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / scenario), *args]


def run_locust(scenario: str, tmp: Path, host: str, *args: str, users: int = 5, seconds: int = 3) -> dict[str, Any]:
    """A headless run; returns its exit code, output, histogram file and Locust's own counts."""
    hdr, stats = tmp / "hdr.json", tmp / "locust"
    argv = locust_argv(
        scenario, "--headless", "-u", str(users), "-r", "100", "-t", f"{seconds}s", "--host", host,
        "--hdr-file", str(hdr), "--json-file", str(stats), "--only-summary", *args,
    )  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    result: dict[str, Any] = {"code": proc.returncode, "output": proc.stdout + proc.stderr}
    if hdr.exists():
        result["hdr"] = load_histogram_file(hdr)
    stats_file = tmp / "locust.json"
    if stats_file.exists():
        result["locust"] = {e["name"]: e for e in json.loads(stats_file.read_text())}
    return result


def assert_counts_match(result: dict[str, Any]) -> None:
    """Every request name: histogram count + failures == Locust's own request count."""
    hdr, locust = result["hdr"], result["locust"]
    assert locust, result["output"]
    for name, entry in locust.items():
        failed = sum(hdr["failures"].get(name, {}).values())
        assert entry["num_failures"] == failed, (name, entry["num_failures"], failed)
        assert hdr["names"][name]["count"] + failed == entry["num_requests"], name


def server_threads(server: RunningServer) -> int:
    return psutil.Process(server.pid).num_threads()


def wait_threads(server: RunningServer, idle: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (n := server_threads(server)) > idle and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


@pytest.fixture
def server(start: Any) -> RunningServer:
    return start("threaded", backlog=128)


def test_chat_headless_counts_and_clean_quits(start: Any, tmp_path: Path) -> None:
    server = start("threaded", backlog=128, log_level="INFO")  # INFO: the server logs each close and reset
    idle = server_threads(server)
    result = run_locust("chat.py", tmp_path, server.url, "--think-time", "0.002", users=5)
    assert result["code"] == 0, result["output"]
    assert "Traceback" not in result["output"]
    hdr = result["hdr"]
    assert hdr["failures"] == {}
    assert_counts_match(result)
    message = hdr["names"]["message"]
    assert message["count"] > 100 and 0 < message["p50_us"] <= message["p99_us"] <= message["max_us"]
    assert set(hdr["names"]) >= {"connect", "message", "session", "send_wait"}
    assert (tmp_path / message["hgrm"]).read_text().startswith("       Value")
    # the per-second intervals add up to the totals
    whole = window(hdr, 0, 2**40)
    assert whole["message"].get_total_count() == message["count"]
    assert summarize(whole["message"])["p50_us"] == message["p50_us"]
    assert hdr["generator"]["processes"][0]["role"] == "local"
    # every user quit: the server's per-connection threads are gone
    assert wait_threads(server, idle) == idle
    log = server.log_text()
    assert "Client is requesting to quit" in log and " lost: " not in log


def test_processes_2_merges_counts(server: RunningServer, tmp_path: Path) -> None:
    result = run_locust("chat.py", tmp_path, server.url, "--processes", "2", users=4)
    assert result["code"] == 0, result["output"]
    assert_counts_match(result)
    roles = sorted(p["role"] for p in result["hdr"]["generator"]["processes"])
    assert roles == ["master", "worker", "worker"]


def test_master_and_one_worker(server: RunningServer, tmp_path: Path) -> None:
    port = free_port()
    worker = subprocess.Popen(
        locust_argv("chat.py", "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        result = run_locust(
            "chat.py", tmp_path, server.url, "--master", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(port), "--expect-workers", "1", users=3,
        )  # fmt: skip
        assert result["code"] == 0, result["output"]
        assert_counts_match(result)
        assert result["hdr"]["names"]["message"]["count"] > 100
        worker.wait(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_open_loop_rate(server: RunningServer, tmp_path: Path) -> None:
    result = run_locust("chat.py", tmp_path, server.url, "--rate", "400", users=5, seconds=4)
    assert result["code"] == 0, result["output"]
    hdr = result["hdr"]
    achieved = hdr["options"]["achieved_rate"]
    assert abs(achieved - 400) <= 20, achieved
    assert "achieved" in result["output"]
    assert {"message_uncorrected", "send_lag"} <= set(hdr["names"])
    assert hdr["names"]["message_uncorrected"]["count"] == hdr["names"]["message"]["count"]
    assert_counts_match(result)


@pytest.mark.parametrize("scenario", ["churn.py", "slow.py", "abrupt.py"])
def test_other_scenarios_run_clean(server: RunningServer, tmp_path: Path, scenario: str) -> None:
    idle = server_threads(server)
    result = run_locust(scenario, tmp_path, server.url, users=4)
    assert result["code"] == 0, result["output"]
    assert result["hdr"]["failures"] == {}
    assert result["hdr"]["names"]["message"]["count"] > 0
    assert_counts_match(result)
    assert wait_threads(server, idle) == idle
    assert server.alive()


def test_abrupt_leaves_by_close_and_reset(start: Any, tmp_path: Path) -> None:
    server = start("threaded", backlog=128, log_level="INFO")
    result = run_locust("abrupt.py", tmp_path, server.url, users=2, seconds=2)
    assert result["code"] == 0, result["output"]
    log = server.log_text()
    assert "lost: ConnectionResetError" in log  # the resets
    assert "session" not in result["hdr"]["names"] or result["hdr"]["names"]["session"]["count"] <= 2


def test_nobody_listening_counts_connect_failures(tmp_path: Path) -> None:
    result = run_locust("chat.py", tmp_path, f"127.0.0.1:{free_port()}", users=2, seconds=2)
    assert result["code"] == 1, result["output"]
    assert "Traceback" not in result["output"]
    refused = result["hdr"]["failures"]["connect"]["ConnectRefused"]
    assert refused == result["locust"]["connect"]["num_failures"] > 0
    assert window_failures(result["hdr"], 0, 2**40)["connect"]["ConnectRefused"] == refused


@pytest.mark.parametrize(
    ("host", "needle"),
    [("tcp://127.0.0.1:notaport", "malformed host"), ("http://127.0.0.1:8000", "malformed host"),
     ("tcp://10.1.2.3:8000", "only loopback"), ("example.com:80", "only loopback")],
)  # fmt: skip
def test_bad_host_is_one_line(host: str, needle: str) -> None:
    proc = subprocess.run(
        locust_argv("chat.py", "--headless", "-t", "1s", "--host", host),
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode != 0
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


def test_loader_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "swarmbench.histograms", "schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version 99"):
        load_histogram_file(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not a readable histogram file"):
        load_histogram_file(bad)
    assert os.path.exists(bad)
