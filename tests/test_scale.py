"""Scale: 2,000 real connections against the asyncio variant, and a master with two workers.

Real Locust processes against a real server on a free port; every process is
stopped in a ``finally``. Think times keep the message rate low: these tests
count connections, they do not time anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import ROOT, free_port, locust_argv

from harness.results.histogram_file import load_histogram_file
from harness.kernel import ConnectionCounter
from harness.server_process import RunningServer

pytestmark = pytest.mark.slow

USERS = 2000
#: A listen queue that holds a spawn burst: the test counts connections, not SYN retries.
BACKLOG = 1024


def locust(*args: str) -> list[str]:
    return locust_argv("chat.py", "--loglevel", "WARNING", *args)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a process in its own group; every one is killed (group and all) at teardown."""
    procs: list[subprocess.Popen] = []

    def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={**os.environ, **(env or {})})  # fmt: skip
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def finish(proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Locust did not end within {timeout:.0f} s: {log.read_text(errors='replace')[-2000:]}")


def peers(pid: int, port: int) -> tuple[int, set[str]]:
    """The server's ESTABLISHED connections on ``port`` and their source addresses."""
    conns = [c for c in psutil.Process(pid).net_connections("tcp")
             if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port and c.raddr]  # fmt: skip
    return len(conns), {c.raddr.ip for c in conns}


def locust_stats(prefix: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in json.loads(prefix.with_suffix(".json").read_text())}


@pytest.mark.alone  # 2,000 connections, and memory per connection measured as a difference
def test_2000_connections_asyncio(start: Any, spawn: Any, tmp_path: Path) -> None:
    server: RunningServer = start("asyncio", backlog=BACKLOG)
    hdr, stats, log = tmp_path / "hdr.json", tmp_path / "locust", tmp_path / "locust.log"
    proc = spawn(
        locust(
            "--headless", "--host", server.url, "-u", str(USERS), "-r", "1000", "-t", "7s", "--stop-timeout", "3",
            "--think-time", "4", "--messages-per-session", "100", "--source-addresses", "4",
            "--hdr-file", str(hdr), "--json-file", str(stats),
        ),
        log,
    )  # fmt: skip
    counter = ConnectionCounter(server.pid, server.port)
    most, deadline = 0, time.monotonic() + 60  # a generous bound, not a speed: Locust runs 7 s
    while most < USERS and proc.poll() is None and time.monotonic() < deadline:
        most = max(most, counter.count())
        time.sleep(0.05)
    assert most == USERS, f"the server held at most {most} connections: {log.read_text()[-2000:]}"
    held, sources = peers(server.pid, server.port)
    assert held == USERS
    assert sources == {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}  # --source-addresses 4, round robin
    assert finish(proc, log) == 0, log.read_text()[-3000:]
    data = load_histogram_file(hdr)
    assert data.failures == {}
    assert data.names["connect"].count >= USERS
    assert data.names["message"].count >= USERS // 2  # each user sends within its first 4 s
    own = locust_stats(stats)
    assert own["connect"]["num_requests"] >= USERS
    assert sum(e["num_failures"] for e in own.values()) == 0
    assert data.names["message"].count == own["message"]["num_requests"]
    gen = data.generator
    assert gen.users_max == USERS and gen.processes[0]["nofile_limit"] > USERS
    assert gen.processes[0]["rss_bytes_max"] > 0
    # every user quit when the run stopped
    assert counter.count() == 0 or _drains(counter)


def _drains(counter: ConnectionCounter, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while counter.count() and time.monotonic() < deadline:
        time.sleep(0.05)
    return counter.count() == 0


def test_master_two_workers_merge(start: Any, spawn: Any, tmp_path: Path) -> None:
    server: RunningServer = start("asyncio", backlog=BACKLOG)
    port = free_port()
    hdr, stats = tmp_path / "hdr.json", tmp_path / "locust"
    workers = [
        spawn(locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port)), tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    master_log = tmp_path / "master.log"
    master = spawn(
        locust(
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", "2",
            "--headless", "--host", server.url, "-u", "600", "-r", "600", "-t", "7s", "--stop-timeout", "3",
            "--think-time", "0.5", "--messages-per-session", "5", "--hdr-file", str(hdr), "--json-file", str(stats),
        ),
        master_log,
    )  # fmt: skip
    assert finish(master, master_log) == 0, master_log.read_text()[-3000:]
    for i, worker in enumerate(workers):
        assert finish(worker, tmp_path / f"w{i}.log", timeout=15) == 0
    data = load_histogram_file(hdr)
    own = locust_stats(stats)
    assert data.failures == {} and sum(e["num_failures"] for e in own.values()) == 0
    for name in ("connect", "message", "session"):
        assert data.names[name].count == own[name]["num_requests"], name
    assert data.names["message"].count > 600
    # each worker's event-loop lag probe, merged second by second like the latencies (the master has none)
    assert data.names["loop_lag"].count > 0
    assert sum(1 for row in data.intervals if "loop_lag" in row.histograms) >= 3
    processes = data.generator.processes
    assert sorted(p["role"] for p in processes) == ["master", "worker", "worker"]
    worker_entries = [p for p in processes if p["role"] == "worker"]
    assert {p["pid"] for p in worker_entries} == {w.pid for w in workers}
    assert sorted(p["users_max"] for p in worker_entries) == [300, 300]
    assert all(p["samples"] > 0 and p["cpu_seconds"] > 0 for p in worker_entries)
    assert data.generator.users_max == 600


SLOW_REPLY_USER = """
from locust import task
from harness.user import TcpUser


class SlowReplyUser(TcpUser):
    reply_timeout = 0.3

    @task
    def chat(self) -> None:
        self.connect()
        if self.send_messages(1):
            self.quit()
"""


def test_watchdog_timeouts_are_reply_timeouts(start: Any, spawn: Any, tmp_path: Path) -> None:
    """gevent wakes a recv whose socket the watchdog shut down with EBADF: still a ReplyTimeout."""
    server: RunningServer = start("threaded", backlog=128, entry=(str(ROOT / "tests" / "slow_server.py"),), extra_args=("--delay-ms", "1500"))
    scenario = tmp_path / "slow_reply.py"
    scenario.write_text(SLOW_REPLY_USER)
    hdr, log = tmp_path / "hdr.json", tmp_path / "locust.log"
    argv = [sys.executable, "-m", "locust", "-f", str(scenario), "--headless", "--host", server.url,
            "-u", "5", "-r", "5", "-t", "3s", "--stop-timeout", "2", "--hdr-file", str(hdr), "--loglevel", "WARNING"]
    proc = spawn(argv, log, env={"PYTHONPATH": str(ROOT)})  # the scenario lives outside the project
    assert finish(proc, log) == 1, log.read_text()[-2000:]  # Locust's exit code when requests failed
    failures = load_histogram_file(hdr).failures
    assert set(failures["message"]) == {"ReplyTimeout"} and failures["message"]["ReplyTimeout"] >= 5, failures
