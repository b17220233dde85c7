"""The reference server against the tutorial's bugs.

Each bug test runs twice: against the tutorial's own server (shared/tutorial,
marked strict xfail: the test must fail there, or the suite fails) and against
the reference server, where it must pass.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import pytest
from helpers import free_port

from harness.server_process import RunningServer, wait_accepting
from server.protocol import MAX_MESSAGE, QUIT, REPLY

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT.parent / "shared" / "tutorial" / "server_thread1.py"

tutorial_bug = pytest.mark.xfail(strict=True, reason="the tutorial's bug, fixed in the reference server")
needs_tutorial = pytest.mark.skipif(not TUTORIAL.exists(), reason=f"{TUTORIAL} not found")
BOTH = [
    pytest.param("tutorial", marks=[tutorial_bug, needs_tutorial]),
    pytest.param("reference"),
]


@dataclass
class Target:
    port: int
    pid: int
    output: Callable[[], str]


@pytest.fixture
def launch(start: Callable[..., RunningServer], tmp_path: Path) -> Iterator[Callable[[str], Target]]:
    procs: list[subprocess.Popen] = []

    def _launch(kind: str, source: Path = TUTORIAL) -> Target:
        if kind == "reference":
            server = start("threaded", log_level="INFO")
            return Target(server.port, server.pid, server.log_text)
        port = free_port()
        log = tmp_path / f"tutorial-{len(procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-u", str(source), str(port)], stdout=out, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        wait_accepting("127.0.0.1", port, 10.0)
        return Target(port, proc.pid, lambda: log.read_text(errors="replace"))

    yield _launch
    for proc in procs:
        proc.kill()
        proc.wait()


def connect(port: int, timeout: float = 3.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def converse(port: int, text: bytes = b"Zack") -> None:
    """A new client is answered: one message, one "-", then quit."""
    with connect(port) as sock:
        sock.sendall(text)
        assert sock.recv(16) == REPLY
        sock.sendall(QUIT)


def settle(proc: psutil.Process, idle_threads: int, idle_fds: int, timeout: float = 2.0) -> tuple[int, int]:
    """Wait (bounded) until the server is back to its idle thread and fd counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = proc.num_threads(), proc.num_fds()
        if counts <= (idle_threads, idle_fds) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def idle_counts(target: Target) -> tuple[psutil.Process, int, int]:
    converse(target.port)  # warm up: the first client's thread has come and gone
    proc = psutil.Process(target.pid)
    time.sleep(0.2)
    return proc, proc.num_threads(), proc.num_fds()


def assert_recovered(target: Target, proc: psutil.Process, threads: int, fds: int) -> None:
    assert settle(proc, threads, fds) == (threads, fds), "threads or fds leaked"
    assert "Traceback" not in target.output()
    converse(target.port)


@pytest.mark.parametrize("kind", BOTH)
def test_close_after_a_message_ends_the_session(launch: Callable[[str], Target], kind: str) -> None:
    target = launch(kind)
    proc, threads, fds = idle_counts(target)
    with connect(target.port) as sock:
        sock.sendall(b"Zack")
        assert sock.recv(16) == REPLY
    assert_recovered(target, proc, threads, fds)


@pytest.mark.parametrize("kind", BOTH)
def test_half_close_does_not_spin(launch: Callable[[str], Target], kind: str) -> None:
    target = launch(kind)
    proc, threads, fds = idle_counts(target)
    with connect(target.port) as sock:
        sock.sendall(b"Zack")
        assert sock.recv(16) == REPLY
        sock.shutdown(socket.SHUT_WR)  # the client still reads: the tutorial replies "-" to nothing, forever
        proc.cpu_percent(None)
        time.sleep(1.0)
        cpu = proc.cpu_percent(None)
        sock.settimeout(1.0)
        flood = 0
        try:
            while chunk := sock.recv(65536):
                flood += len(chunk)
                if flood > 10 * MAX_MESSAGE:
                    break
        except TimeoutError:
            pass
    assert flood == 0, f"{flood} bytes of replies to nothing"
    assert cpu < 30.0, f"server used {cpu:.0f}% CPU while a half-closed client waited"
    assert_recovered(target, proc, threads, fds)


@pytest.mark.parametrize("kind", BOTH)
def test_reset_is_no_traceback(launch: Callable[[str], Target], kind: str) -> None:
    target = launch(kind)
    proc, threads, fds = idle_counts(target)
    sock = connect(target.port)
    sock.sendall(b"Zack")
    assert sock.recv(16) == REPLY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    time.sleep(0.3)
    assert_recovered(target, proc, threads, fds)


@pytest.mark.parametrize("kind", BOTH)
def test_invalid_utf8_is_answered_and_the_socket_kept_in_order(launch: Callable[[str], Target], kind: str) -> None:
    target = launch(kind)
    proc, threads, fds = idle_counts(target)
    with connect(target.port, timeout=2.0) as sock:
        sock.sendall(b"\xff\xfe\xfd")
        assert sock.recv(16) == REPLY
        sock.sendall(b"Zack")
        assert sock.recv(16) == REPLY
        sock.sendall(QUIT)
    assert_recovered(target, proc, threads, fds)


@pytest.mark.parametrize("kind", BOTH)
def test_message_size_is_its_byte_length(launch: Callable[[str], Target], kind: str) -> None:
    target = launch(kind)
    converse(target.port, b"a" * 5100)  # under 5120 bytes: sys.getsizeof() said 5133
    time.sleep(0.2)
    assert "greater than expected" not in target.output()


@pytest.mark.parametrize("kind", BOTH)
def test_oversized_multibyte_message_is_survived(launch: Callable[[str], Target], kind: str) -> None:
    target = launch(kind)
    proc, threads, fds = idle_counts(target)
    with connect(target.port, timeout=2.0) as sock:
        sock.sendall(("é" * 6000).encode())  # 12000 bytes; the 5120 cut falls mid-character for recv
        replies = 0
        while replies < 3:
            replies += sock.recv(16).count(REPLY)
        sock.sendall(QUIT)
    assert "greater than expected 5120" in target.output()
    assert_recovered(target, proc, threads, fds)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("kind", BOTH)
def test_signal_stops_it_with_clients_connected(launch: Callable[[str], Target], kind: str, sig: int) -> None:
    target = launch(kind)
    clients = [connect(target.port) for _ in range(5)]
    try:
        for sock in clients:
            sock.sendall(b"Zack")
            assert sock.recv(16) == REPLY
        os.kill(target.pid, sig)
        proc = psutil.Process(target.pid)
        try:
            code = proc.wait(timeout=2.0)
        except psutil.TimeoutExpired:
            pytest.fail("still running 2 s after the signal")
        assert code == 0
        for sock in clients:  # every client socket was closed by the server
            sock.settimeout(1.0)
            assert sock.recv(16) == b""
    finally:
        for sock in clients:
            sock.close()


@needs_tutorial
@pytest.mark.parametrize("kind", BOTH)
def test_thread_target_exists(launch: Callable[..., Target], kind: str, tmp_path: Path) -> None:
    """The published tutorial defines clientThread but starts client_thread."""
    source = tmp_path / "server_thread_original.py"
    source.write_text(TUTORIAL.read_text().replace("def client_thread(", "def clientThread("))
    target = launch(kind, source)
    converse(target.port)


def test_200_clients_x_20_messages_and_threads_back_to_idle(start: Callable[..., RunningServer]) -> None:
    server = start("threaded")
    proc, idle, _ = idle_counts(Target(server.port, server.pid, server.log_text))
    peak = [0]
    errors: list[BaseException] = []
    go = threading.Barrier(200, timeout=30)

    def client() -> None:
        try:
            with connect(server.port, timeout=10.0) as sock:
                go.wait()
                for _ in range(20):
                    sock.sendall(b"Zack")
                    assert sock.recv(16) == REPLY
                peak[0] = max(peak[0], proc.num_threads())
                sock.sendall(QUIT)
                assert sock.recv(16) == b""  # the server closes after quit
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert peak[0] > idle + 100, "the reference grows a thread per connection"
    assert settle(proc, idle, 10**6, timeout=2.0)[0] <= idle
