"""``swarmbench worker`` follows a whole distributed sweep; a master's wait for workers is bounded.

Master, workers and server all on 127.0.0.1, on ports the OS picks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from helpers import free_port, kill_group, wait_until

from harness.results import load_run
from harness.server_process import RunningServer

pytestmark = pytest.mark.slow

CELLS = ["--users", "1,2", "--duration", "2s", "--warmup", "1s", "--quiet"]  # distributed: 1 s windows measured 0 messages once


@pytest.fixture
def workers() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``workers(master_port, *args)`` -> a running ``swarmbench worker``; every one is killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def _start(port: int, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "worker", "--master", f"127.0.0.1:{port}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield _start
    for proc in started:
        kill_group(proc)


def sweep(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    # no report: these tests read the result files (a report is about 3 s of a core each time)
    return subprocess.run([sys.executable, "-m", "harness", "sweep", "--no-report", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_two_workers_join_every_cell_and_leave_when_the_sweep_ends(
    start: Callable[..., RunningServer], workers: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    server = start("threaded")
    port = free_port()
    pair = [workers(port), workers(port)]
    out = tmp_path / "run"
    result = sweep("--target", f"127.0.0.1:{server.port}", "--pid", str(server.pid), *CELLS, "--expect-workers", "2",
                   "--master-bind", f"127.0.0.1:{port}", "--worker-wait", "60s", "--out", str(out), "--check", "errors==0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, cells = load_run(out)
    assert [(c.users, c.status) for c in cells] == [(1, "ok"), (2, "ok")], [c.error for c in cells]
    assert all(c.messages > 0 for c in cells)
    for proc in pair:  # the last master told them: they leave at once, not after --master-timeout
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "the sweep ended after 2 cell(s)" in stdout, stdout


def test_a_missing_worker_fails_the_cell_in_one_line_and_the_sweep_goes_on_or_stops(
    start: Callable[..., RunningServer], workers: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    server = start("threaded")
    port = free_port()
    workers(port, "--master-timeout", "120s")
    common = ["--target", f"127.0.0.1:{server.port}", *CELLS, "--expect-workers", "2", "--master-bind", f"127.0.0.1:{port}"]
    result = sweep(*common, "--worker-wait", "3s", "--out", str(tmp_path / "on"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "workers joined" in line]
    assert len(lines) == 2 and all("only 1 of 2 workers joined within 3 s (--worker-wait)" in line for line in lines), result.stderr
    manifest, cells = load_run(tmp_path / "on")
    assert manifest is not None and manifest.outcome == "complete"
    assert [c.status for c in cells] == ["failed", "failed"]
    stopped = sweep(*common, "--worker-wait", "2s", "--stop-on-failure", "--out", str(tmp_path / "stop"))
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr
    manifest, cells = load_run(tmp_path / "stop")
    assert manifest is not None and manifest.outcome == "failed" and len(cells) == 1
    assert "workers joined within 2 s" in (cells[0].error or "")


def test_a_worker_with_no_master_gives_up_after_its_timeout(workers: Callable[..., subprocess.Popen[str]]) -> None:
    port = free_port()
    proc = workers(port, "--master-timeout", "2s")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stderr.strip().splitlines() == [f"swarmbench worker: no master at 127.0.0.1:{port} started a cell within 2 s (--master-timeout)"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_stops_cleanly_on_a_signal_with_its_locust_child(workers: Callable[..., subprocess.Popen[str]], sig: signal.Signals) -> None:
    proc = workers(free_port())
    me = psutil.Process(proc.pid)
    wait_until(lambda: any("locust" in " ".join(c.cmdline()) for c in me.children(recursive=True)), 60, "the Locust worker")
    children = me.children(recursive=True)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and "stopped" in stderr
    for child in children:
        wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10, f"child {child.pid} to end")


def test_bad_worker_arguments_are_one_line() -> None:
    for args, needle in ((["--master", "127.0.0.1:"], "malformed host"), (["--master", "127.0.0.1:5557", "--scenario", "nosuch"], "unknown scenario")):
        result = subprocess.run([sys.executable, "-m", "harness", "worker", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr, result.stderr
