"""The interactive client, driven through its standard input against a real server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Callable

from harness.servers import RunningServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_client(port: int, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.client", "--port", str(port)],
        input=stdin, capture_output=True, text=True, timeout=20,
    )  # fmt: skip


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_client_sends_lines_and_quits(start: Callable[..., RunningServer]) -> None:
    server = start("threaded", log_level="INFO")
    result = run_client(server.port, "Zack\n\nPython\nquit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Please enter 'quit' to exit\n -> ")
    assert result.stdout.count(" -> ") == 4  # the empty line is skipped, not sent
    assert wait_for(lambda: "Client is requesting to quit" in server.log_text())
    log = server.log_text()
    assert log.index("Processed result: Hello ZACK") < log.index("Processed result: Hello PYTHON")
    assert log.index("Processed result: Hello PYTHON") < log.index("Client is requesting to quit")


def test_end_of_input_quits_cleanly(start: Callable[..., RunningServer]) -> None:
    server = start("threaded", log_level="INFO")
    result = run_client(server.port, "world!\nAnothny")
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: "Client is requesting to quit" in server.log_text())
    assert "Processed result: Hello ANOTHNY" in server.log_text()


def test_refused_connection_prints_connection_error() -> None:
    result = run_client(free_port(), "Zack\n")
    assert result.returncode == 1
    assert result.stdout.strip() == "Connection Error"
    assert "Traceback" not in result.stderr
