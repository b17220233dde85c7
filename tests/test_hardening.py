"""Hardening (issue 12) on every variant: idle timeouts, client text in the log, and the
test-only slow server that replaced the servers' hidden ``--delay-ms``."""

from __future__ import annotations

import socket
import time
from typing import Callable

import pytest
from helpers import converse, read_to_eof
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
