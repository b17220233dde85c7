"""Shared fixtures: real servers on 127.0.0.1, on ports the OS picks, always stopped."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from harness.server_process import RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent

# A shell that starts the suite in the background without job control (`cmd &` in a script) leaves
# SIGINT ignored, and every process a test starts would inherit that: the tests that send SIGINT
# would send it to processes that cannot hear it. With Python's own handler here, children start
# with the default disposition (a handler does not survive exec; an ignored signal does).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``start(variant, **kwargs)`` -> a running server; every one is stopped at teardown."""
    started: list[RunningServer] = []

    def _start(variant: str = "threaded", **kwargs: object) -> RunningServer:
        kwargs.setdefault("log_path", tmp_path / f"{variant}-{len(started)}.log")
        server = start_server(variant, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield _start
    for server in started:
        if server.alive():
            server.stop(timeout=3.0)
        if server.alive():
            server.kill()
