"""The interactive client, driven through its standard input against a real server."""

from __future__ import annotations

import subprocess
import sys
from typing import Callable

import pytest
from helpers import free_port, wait_for

from harness.server_process import RunningServer

pytestmark = pytest.mark.slow  # every test here starts a process


def run_client(port: int, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.client", "--port", str(port), *args],
        input=stdin, capture_output=True, text=True, timeout=20,
    )  # fmt: skip


def test_client_sends_lines_and_quits(start: Callable[..., RunningServer]) -> None:
    server = start("threaded", log_level="INFO")
    result = run_client(server.port, "Zack\n\nPython\nquit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Please enter 'quit' to exit\n -> ")
    assert result.stdout.count(" -> ") == 4  # the empty line is skipped, not sent
    assert wait_for(lambda: "Client is requesting to quit" in server.log_text(), 30.0)
    log = server.log_text()
    assert log.index("Processed result: Hello ZACK") < log.index("Processed result: Hello PYTHON")
    assert log.index("Processed result: Hello PYTHON") < log.index("Client is requesting to quit")


def test_end_of_input_quits_cleanly(start: Callable[..., RunningServer]) -> None:
    server = start("threaded", log_level="INFO")
    result = run_client(server.port, "world!\nAnothny")
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: "Client is requesting to quit" in server.log_text(), 30.0)
    assert "Processed result: Hello ANOTHNY" in server.log_text()


def test_refused_connection_prints_connection_error() -> None:
    result = run_client(free_port(), "Zack\n")
    assert result.returncode == 1
    assert result.stdout.strip() == "Connection Error"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_meaningless_timeout_is_a_one_line_error(value: str) -> None:
    result = run_client(free_port(), "", f"--timeout={value}")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--timeout" in lines[0] and "error:" in lines[0], result.stderr
