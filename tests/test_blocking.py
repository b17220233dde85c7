"""The thread pool's queue and ``--idle-timeout`` (issue 22, item 10), on real processes and loopback sockets.

Before, a connection's idle clock started only when a worker took it from the
queue: every silent connection ahead of a live one cost a worker one whole
idle timeout (or TLS handshake limit), so with S silent connections and W
workers a live client waited about S/W timeouts. Time in the queue now counts,
so the live client waits about one. The bounds below are that relation, with a
wide margin both ways, not wall-clock targets.
"""

from __future__ import annotations

import ctypes
import platform
import signal
import socket
import subprocess
import time

import psutil
import pytest
import trustme
from helpers import converse, read_to_eof, wait_for
from test_tls import ca, cert_files, client_context  # noqa: F401 - ca, cert_files: fixtures
from test_variants import Start, assert_clean

from server.protocol import QUIT, REPLY

pytestmark = pytest.mark.slow  # every test here starts a process

WORKERS = 2
SILENT = 20
#: Seconds; the old code needed SILENT / WORKERS of these before serving a client queued behind the silent ones.
TIMEOUT = 1.0
#: Half the old code's wait: the new one needs about one TIMEOUT (the silent connections the workers took first).
BOUND = SILENT / WORKERS * TIMEOUT / 2


def silent_connections(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` connections that say nothing (not even a TLS hello)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(address, timeout=60))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def assert_all_closed_by_server(socks: list[socket.socket]) -> None:
    for sock in socks:
        try:
            assert read_to_eof(sock) == b""
        except ConnectionResetError:  # closed with the client's bytes unread: a reset is a close too
            pass


def test_time_in_the_queue_counts_against_the_idle_timeout(start: Start) -> None:
    """A client queued behind silent connections is served after about one idle timeout, not one per silent pair."""
    server = start(
        "pool", backlog=64, log_level="INFO",
        extra_args=("--workers", str(WORKERS), "--idle-timeout", str(TIMEOUT)),
    )  # fmt: skip
    silent = silent_connections(server.address, SILENT)
    try:
        began = time.monotonic()
        converse(server.address, [b"queued behind the silent ones"], timeout=60.0)
        waited = time.monotonic() - began
        assert waited < BOUND, f"served after {waited:.1f} s: the silent connections each cost a worker a timeout"
        assert_all_closed_by_server(silent)
    finally:
        for sock in silent:
            sock.close()
    assert_clean(server)
    assert wait_for(lambda: server.log_text().count(f"idle for {TIMEOUT:g} s: closing it") >= SILENT, 30.0)


def test_a_queued_client_that_has_spoken_is_served(start: Start) -> None:
    """Waiting in the queue longer than the idle timeout is not idleness when the client has sent its message."""
    server = start("pool", extra_args=("--workers", "1", "--idle-timeout", str(TIMEOUT)))
    with socket.create_connection(server.address, timeout=30) as busy, socket.create_connection(server.address, timeout=30) as queued:
        busy.sendall(b"holding the only worker")
        assert busy.recv(16) == REPLY
        queued.sendall(b"sent at once, then queued")
        deadline = time.monotonic() + 2 * TIMEOUT  # the queued one waits two idle timeouts
        while time.monotonic() < deadline:
            busy.sendall(b"still talking")
            assert busy.recv(16) == REPLY
            time.sleep(TIMEOUT / 4)
        busy.sendall(QUIT)
        assert read_to_eof(busy) == b""
        assert queued.recv(16) == REPLY
        queued.sendall(QUIT)
        assert read_to_eof(queued) == b""
    assert_clean(server)


def test_time_in_the_queue_counts_against_the_tls_handshake(start: Start, ca: trustme.CA, cert_files: tuple[str, str]) -> None:  # noqa: F811
    """Stalled TLS handshakes ahead of a client cost the pool about one handshake limit, not one per worker each."""
    cert, key = cert_files
    server = start(
        "pool", backlog=64, log_level="INFO",
        extra_args=("--workers", str(WORKERS), "--idle-timeout", str(TIMEOUT), "--tls-cert", cert, "--tls-key", key),
    )  # fmt: skip
    silent = silent_connections(server.address, SILENT)
    try:
        began = time.monotonic()
        with socket.create_connection(server.address, timeout=60) as raw:
            with client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(b"queued behind stalled handshakes")
                assert sock.recv(16) == REPLY
                waited = time.monotonic() - began
                sock.sendall(QUIT)
                assert sock.recv(16) == b""
        assert waited < BOUND, f"served after {waited:.1f} s: each stalled handshake cost a worker its limit"
        assert_all_closed_by_server(silent)
    finally:
        for sock in silent:
            sock.close()
    assert wait_for(lambda: server.log_text().count("TLS handshake with 127.0.0.1:") >= SILENT, 30.0), server.log_text()[-2000:]
    assert_clean(server)


#: tgkill(2) by architecture: a signal aimed at one thread of another process (the stdlib has no call for it).
SYS_TGKILL = {"x86_64": 234, "aarch64": 131}


def tgkill(pid: int, tid: int, signum: int) -> None:
    number = SYS_TGKILL.get(platform.machine())
    if number is None:
        pytest.skip(f"tgkill's number on {platform.machine()} is not known here")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.parametrize("variant", ["pool", "threaded"])
def test_a_signal_the_kernel_gives_a_worker_thread_still_stops_the_server(start: Start, variant: str) -> None:
    """The kernel may hand SIGTERM to any thread. Python runs the handler in the main thread only, which sat in
    select() until something woke it: a pool stayed up, all threads asleep (seen once in CI). Aimed here at a
    thread that is not the main one, blocked on its queue (pool) or in recv (threaded)."""
    server = start(variant)
    with socket.create_connection(server.address, timeout=10) as client:
        client.sendall(b"hello")
        assert client.recv(16) == REPLY  # threaded: its client thread now waits in recv
        others = [t.id for t in psutil.Process(server.pid).threads() if t.id != server.pid]
        assert others, "no thread besides the main one"
        tgkill(server.pid, others[-1], signal.SIGTERM)
        try:
            code = server.process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{variant} still running 10 s after a SIGTERM given to a worker thread")
    assert code == 0 and "Server stopped" in server.log_text()
