"""Start a server variant as its own process on a free port, and stop it.

The server is started as ``python -m server VARIANT --port 0``; the port comes
from the ``Serving on HOST:PORT`` line it prints, so there is no race for a
port. Its output goes to a log file that is kept.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import die_with_parent, no_interrupts

SERVING_RE = re.compile(r"^Serving on \[?([^\]\s]+?)\]?:(\d+) ", re.MULTILINE)


class ServerStartError(RuntimeError):
    """The server did not come up; the message is a one-line reason."""


@dataclass
class RunningServer:
    """A server process the harness started."""

    variant: str
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit code."""
        with no_interrupts():
            return self._stop(timeout)

    def _stop(self, timeout: float) -> int:
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server and any children it left (prefork)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(
    variant: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    backlog: int = 6,
    log_level: str = "WARNING",
    extra_args: Sequence[str] = (),
    entry: Sequence[str] = ("-m", "server"),
) -> list[str]:
    return [
        sys.executable, "-P", *entry, variant,
        "--host", host, "--port", str(port), "--backlog", str(backlog),
        "--log-level", log_level, *extra_args,
    ]  # fmt: skip


def start_server(
    variant: str,
    *,
    host: str = "127.0.0.1",
    backlog: int = 6,
    log_level: str = "WARNING",
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    timeout: float = 10.0,
    entry: Sequence[str] = ("-m", "server"),
) -> RunningServer:
    """Start ``variant`` on a free port and return once it accepts connections."""
    argv = server_command(
        variant, host=host, port=0, backlog=backlog, log_level=log_level, extra_args=extra_args, entry=entry
    )
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"swarmbench-{variant}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C on the harness doesn't hit it twice
            preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        return _await_ready(variant, process, log_path, argv, timeout)
    except BaseException:
        with no_interrupts():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
        raise


def _await_ready(
    variant: str, process: subprocess.Popen, log_path: Path, argv: list[str], timeout: float
) -> RunningServer:
    """Wait for the "Serving on" line, then for the port to accept."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(errors="replace")
        match = SERVING_RE.search(text)
        if match:
            server = RunningServer(variant, match.group(1), int(match.group(2)), process, log_path, argv)
            break
        if process.poll() is not None:
            last = text.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
            raise ServerStartError(f"server {variant!r} exited at start: {last[0]}")
        if time.monotonic() > deadline:
            raise ServerStartError(f"server {variant!r} did not start within {timeout:.0f} s")
        time.sleep(0.02)
    wait_accepting(server.host, server.port, deadline - time.monotonic())
    return server


def wait_accepting(host: str, port: int, timeout: float) -> None:
    """Return once a TCP connect to host:port succeeds (closed at once, without a message)."""
    deadline = time.monotonic() + max(timeout, 0.1)
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ServerStartError(f"{host}:{port} does not accept connections: {exc}") from None
            time.sleep(0.02)
