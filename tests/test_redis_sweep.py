"""A real third-party server: Debian's redis-server on a free loopback port, swept with --protocol redis.

The issue's "done when": ``swarmbench sweep --target 127.0.0.1:PORT --pid PID
--protocol redis --users 1,10 --check errors==0``; the report shows redis's
single thread flat as users grow.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, kill_group, wait_until, redis_binary

from harness.results import load_run

pytestmark = pytest.mark.slow


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16) == b"+PONG\r\n"
    except OSError:
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of a redis-server on 127.0.0.1 with no persistence; stopped at teardown."""
    port = free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1",
         "--daemonize", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: answers(port), 30, "redis-server to answer PING")
        yield port, proc.pid
    finally:
        kill_group(proc)


def test_redis_sweep_has_no_errors_and_its_thread_count_stays_flat(redis_server: tuple[int, int], tmp_path: Path) -> None:
    port, pid = redis_server
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "sweep", "--target", f"127.0.0.1:{port}", "--pid", str(pid),
         "--protocol", "redis", "--users", "1,10", "--duration", "1s", "--warmup", "0s", "--quiet",
         "--out", str(out), "--check", "errors==0"],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest, cells = load_run(out)
    assert manifest is not None and "--protocol=redis" in manifest.options["locust_args"]
    assert [(c.users, c.status) for c in cells] == [(1, "ok"), (10, "ok")]
    assert all(c.messages > 0 and c.server.samples > 0 for c in cells)
    one, ten = cells
    assert ten.server.threads_max == one.server.threads_max  # one event loop: connections cost no threads
    assert any(p.threads for p in ten.timeline)
    assert "thread count stays flat" in (out / "report.html").read_text()


def test_redis_server_is_a_target_the_probe_accepts(redis_server: tuple[int, int]) -> None:
    from harness.probe import probe

    port, _ = redis_server
    probe("127.0.0.1", port)
    probe("localhost", port)
