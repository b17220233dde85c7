"""Hardening (issue 12) on every variant: idle timeouts, client text in the log, and the
test-only slow server that replaced the servers' hidden ``--delay-ms``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Callable

import pytest
from helpers import converse, free_port, read_to_eof
from test_variants import ROOT, Start, assert_clean, config, serve, wait_logged  # noqa: F401 - config, serve: fixtures

from harness.server_process import RunningServer

pytestmark = pytest.mark.slow  # every test here starts a process


def test_idle_timeout_closes_a_silent_connection(serve: Callable[..., RunningServer]) -> None:
    """--idle-timeout: a client that sends nothing is closed (and logged); one that talks is not."""
    server = serve(extra_args=("--idle-timeout", "0.5"), log_level="INFO")
    with socket.create_connection(server.address, timeout=30) as silent:
        port = silent.getsockname()[1]
        assert read_to_eof(silent) == b""  # the server closed it; the timeout bounds the wait
    wait_logged(server, f"Connection 127.0.0.1:{port} idle for 0.5 s: closing it", timeout=30.0)
    converse(server.address, [b"a client that talks", b"is served"])
    assert_clean(server)


def test_client_text_is_escaped_in_the_log(serve: Callable[..., RunningServer]) -> None:
    """A client can't forge log lines or colour the terminal: control characters are escaped."""
    server = serve(log_level="INFO")
    port = converse(server.address, ["a\x1b[31mb\nForged line\r".encode()])
    log = wait_logged(server, f"Connection 127.0.0.1:{port} closed")
    assert "\x1b" not in log and "\r" not in log
    assert not any(line.startswith("Forged line") for line in log.splitlines())
    assert "Processed result: Hello A\\x1b[31MB\\nFORGED LINE" in log


def test_pool_idle_timeout_frees_workers_held_by_silent_clients(start: Start) -> None:
    """Two silent clients held a 2-worker pool forever; with --idle-timeout a third is served."""
    server = start("pool", extra_args=("--workers", "2", "--idle-timeout", "0.5"))
    silent = [socket.create_connection(server.address, timeout=30) for _ in range(2)]
    try:
        converse(server.address, [b"served once the silent ones time out"], timeout=30.0)
        for sock in silent:
            assert read_to_eof(sock) == b""
    finally:
        for sock in silent:
            sock.close()


def test_slow_server_is_a_test_module_reusing_the_servers_command_line(start: Start) -> None:
    """tests/slow_server.py: any variant, its replies delayed by --delay-ms (production code has no delay)."""
    server = start("selectors", entry=(str(ROOT / "tests" / "slow_server.py"),), extra_args=("--delay-ms", "300"))
    began = time.monotonic()
    converse(server.address, [b"slow"])
    assert time.monotonic() - began >= 0.3  # a lower bound: the sleep happened (no speed assertion)
    assert server.stop(timeout=10.0) == 0


# -- numbers out of range (issue 22, item 5) ---------------------------------------------------
def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -P -m MODULE ARGS``, which must exit at once (``timeout`` fails the test: it started serving)."""
    argv = [sys.executable, "-P", "-m", module, *args]
    return subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize(
    "args",
    [
        # selectors died at start from ~8.6e6 s; threaded and pool with 1e10 started, then reset every client.
        ["selectors", "--idle-timeout", "9e6"], ["threaded", "--idle-timeout", "1e10"], ["pool", "--idle-timeout", "1e10"],
        ["asyncio", "--idle-timeout", "86401"], ["prefork", "--idle-timeout", "1e300"], ["selectors", "--idle-timeout", "1e-9"],
        ["threaded", "--backlog", "2147483648"], ["threaded", "--backlog", "-1"], ["threaded", "--backlog", "nan"],
        ["threaded", "--backlog", "1e3"], ["pool", "--workers", "10001"], ["pool", "--workers", "9" * 5000],
        ["pool", "--workers", "inf"], ["prefork", "--processes", "2147483648"], ["prefork", "--processes", "-2"],
        ["prefork", "--processes", "nan"], ["threaded", "--port", "65536"], ["threaded", "--port", "-1"],
        ["threaded", "--port", "inf"], ["threaded", "--port", "1e10"],
    ],
    ids=lambda args: " ".join(args)[:40],
)  # fmt: skip
def test_numbers_out_of_range_are_one_line_errors(args: list[str]) -> None:
    """Every numeric option refuses what its code cannot take: one line naming the option, exit 2."""
    result = _run("server", *args, "--port", "0") if "--port" not in args else _run("server", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr[-2000:])
    assert args[1] in lines[0] and "error:" in lines[0] and len(lines[0]) < 300, lines[0]
    assert "Serving on" not in result.stdout


def test_the_interactive_clients_timeout_is_bounded_too() -> None:
    """``--timeout 1e10`` overflowed the socket's timeout: a traceback after parsing; now a usage error."""
    result = _run("server.client", "--port", str(free_port()), "--timeout", "1e10")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--timeout" in lines[0], result.stderr[-2000:]


def test_the_longest_idle_timeout_serves_on_every_variant(serve: Callable[..., RunningServer]) -> None:
    """The bound is one every design can wait: a day's idle timeout starts, serves and stops cleanly."""
    server = serve(extra_args=("--idle-timeout", "86400"))
    converse(server.address, [b"a day to talk"])
    assert_clean(server)
    assert server.stop(timeout=10.0) == 0
