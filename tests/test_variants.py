"""One conformance suite for every server variant: real processes, real sockets, ports from the OS.

Each test runs once per entry of CONFIGS (every name in VARIANTS, plus the
asyncio variant on uvloop). Variant-specific behaviour (the pool's queue, the
missing-uvloop error) is tested at the end; prefork's workers in test_prefork.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import psutil
import pytest

from harness.server_process import RunningServer
from server.protocol import QUIT, REPLY
from server.variants import VARIANTS
from helpers import (converse, established, read_to_eof, resources, run_clients, running_share, steady_resources,
                     wait_for, wait_logged)

ROOT = Path(__file__).resolve().parent.parent

#: (id, variant, extra command-line arguments)
CONFIGS = [(name, name, ()) for name in VARIANTS] + [("asyncio-uvloop", "asyncio", ("--loop", "uvloop"))]

Start = Callable[..., RunningServer]

pytestmark = pytest.mark.slow  # every test here starts a process


@pytest.fixture(params=CONFIGS, ids=[c[0] for c in CONFIGS])
def config(request: pytest.FixtureRequest) -> tuple[str, tuple[str, ...]]:
    _, variant, extra = request.param
    if "uvloop" in extra and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed (the project's uvloop extra)")
    return variant, extra


@pytest.fixture
def serve(start: Start, config: tuple[str, tuple[str, ...]]) -> Callable[..., RunningServer]:
    """``serve(**kwargs)``: start this test's configuration."""
    variant, extra = config

    def _serve(extra_args: tuple[str, ...] = (), **kwargs: object) -> RunningServer:
        return start(variant, extra_args=(*extra, *extra_args), **kwargs)

    return _serve


def connection_lines(log: str, port: int) -> list[str]:
    """The log lines of one connection, from ``Connected with`` to its ``closed`` line.

    Lines naming another peer (the start-up probe's) are left out; lines naming
    none are this connection's as long as it is the only one talking.
    """
    peer = f"127.0.0.1:{port}"
    lines = [line for line in log.splitlines() if peer in line or "127.0.0.1:" not in line]
    first = lines.index(f"Connected with {peer}")
    last = lines.index(f"Connection {peer} closed", first)
    return lines[first : last + 1]


def assert_clean(server: RunningServer) -> None:
    assert server.alive(), f"server died:\n{server.log_text()[-2000:]}"
    assert "Traceback" not in server.log_text(), server.log_text()[-4000:]


# -- the tutorial's walk-through ---------------------------------------------------
def test_tutorial_walkthrough(serve: Callable[..., RunningServer]) -> None:
    server = serve(log_level="INFO")
    sessions = [[b"Zack"], [b"Python"], [b"world!", b"Anothny"]]
    for messages in sessions:
        port = converse(server.address, messages)
        log = wait_logged(server, f"Connection 127.0.0.1:{port} closed")
        expected = [f"Connected with 127.0.0.1:{port}"]
        for message in messages:
            expected += [
                "Processing the input received from client",
                f"Processed result: Hello {message.decode().upper()}",
            ]
        expected += [
            "Processing the input received from client",
            "Client is requesting to quit",
            f"Connection 127.0.0.1:{port} closed",
        ]
        assert connection_lines(log, port) == expected
    assert_clean(server)


# -- load ---------------------------------------------------------------------------
def test_200_concurrent_clients(serve: Callable[..., RunningServer]) -> None:
    """200 clients at once, 20 round trips each: every reply is ``-`` (backlog 256: this is not the storm)."""
    server = serve(backlog=256)
    problems = run_clients(server.address, clients=200, messages=20, timeout=60.0)
    assert problems == [], f"{len(problems)} clients failed, e.g. {problems[:5]}"
    assert_clean(server)


def test_connection_storm_against_backlog_6(serve: Callable[..., RunningServer]) -> None:
    """500 concurrent connects against listen(6): SYNs are dropped and retried, all are served."""
    server = serve(backlog=6)
    problems = run_clients(server.address, clients=500, messages=1, timeout=30.0, spread=2.0)
    assert problems == [], f"{len(problems)} clients failed, e.g. {problems[:5]}"
    assert_clean(server)


# -- bad clients --------------------------------------------------------------------
def test_bad_clients(serve: Callable[..., RunningServer]) -> None:
    """Close, reset, half-close, invalid UTF-8, oversized, byte-at-a-time: nothing leaks or spins."""
    server = serve()
    address = server.address
    converse(address, [b"warm up"])
    # Idle once the warm-up client's thread (threaded) is gone: the counts hold still. (Not the counts
    # before it: uvloop reserves a descriptor at its first accept.)
    idle = steady_resources(server.pid)

    # Abrupt close, without quit.
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"hello")
        assert sock.recv(16) == REPLY
    # Reset (SO_LINGER 0), after a reply and with one in flight.
    for wait_reply in (True, False):
        sock = socket.create_connection(address, timeout=5)
        sock.sendall(b"hello")
        if wait_reply:
            assert sock.recv(16) == REPLY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    # Half-close: the server answers, sees EOF, closes; it must not spin meanwhile.
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        running = running_share(server.pid, seconds=1.0)
        assert read_to_eof(sock) == REPLY
    assert running < 0.5, f"a server thread was running at {running:.0%} of readings with a half-closed client"
    # Invalid UTF-8 is answered, the session goes on.
    with socket.create_connection(address, timeout=5) as sock:
        for message in (b"\xff\xfe\xfd", b"still here"):
            sock.sendall(message)
            assert sock.recv(16) == REPLY
        sock.sendall(QUIT)
        assert read_to_eof(sock) == b""
    # Oversized: one reply per piece of at most 5120 bytes (how many depends on the reads).
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"x" * 12000)
        replies = b""
        while len(replies) < 3:  # at least three pieces of at most 5120 bytes, however the reads fall
            chunk = sock.recv(16)
            assert chunk, f"closed after {replies!r}"
            replies += chunk
        sock.sendall(QUIT)
        replies += read_to_eof(sock)
    assert 3 <= len(replies) <= 12000 and replies == REPLY * len(replies), replies
    # Byte at a time, a two-byte character split across two messages.
    with socket.create_connection(address, timeout=5) as sock:
        for byte in "héllo".encode():
            sock.sendall(bytes([byte]))
            assert sock.recv(16) == REPLY
        sock.sendall(QUIT)
        assert read_to_eof(sock) == b""

    converse(address, [b"after all that"])
    back = wait_for(lambda: all(now <= then for now, then in zip(resources(server.pid), idle)), timeout=30.0)
    assert back, f"threads and fds {resources(server.pid)} did not return to idle {idle}"
    log = server.log_text()
    assert "The input size is greater than expected 5120" in log
    assert "Invalid UTF-8" in log
    assert_clean(server)


def test_out_of_file_descriptors(serve: Callable[..., RunningServer], config: tuple[str, tuple[str, ...]]) -> None:
    """EMFILE on accept: one warning per episode (and one line when it ends); the clients held are
    still served meanwhile, and those that waited are served once descriptors are back.

    uvloop is the exception: libuv sheds the waiting clients (it accepts one on a
    reserved descriptor and closes it) rather than leave them queued, and tells
    the server nothing, so there is no episode to log.
    """
    variant, extra = config
    server = serve(extra_args=("--processes", "2") if variant == "prefork" else ())
    uvloop = "uvloop" in extra
    allowed = {REPLY, b""} if uvloop else {REPLY}
    address = server.address
    held = socket.create_connection(address, timeout=10)
    held.sendall(b"first")
    assert held.recv(16) == REPLY
    procs = psutil.Process(server.pid).children() or [psutil.Process(server.pid)]
    if variant == "prefork":
        _every_worker_serving(procs, address, server.port)  # a worker still starting would die of the limit
    limits = {p.pid: p.rlimit(psutil.RLIMIT_NOFILE) for p in procs}
    waiting: list[socket.socket] = []
    try:
        for proc in procs:
            proc.rlimit(psutil.RLIMIT_NOFILE, (proc.num_fds() + 2, limits[proc.pid][1]))
        for _ in range(5):  # more than the fds left (in one process at least), fewer than listen(6) queues
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(b"queued")
            waiting.append(sock)
        if not uvloop:
            wait_logged(server, "Out of file descriptors", timeout=30.0)
        for _ in range(5):  # the episode lasts until the limits are restored: the held client is answered
            held.sendall(b"still served")
            assert held.recv(16) == REPLY
        assert "File descriptors available again" not in server.log_text()
        for proc in procs:
            proc.rlimit(psutil.RLIMIT_NOFILE, limits[proc.pid])
        outcomes = [_reply_or_closed(sock) for sock in waiting]  # served once descriptors are back
        assert set(outcomes) <= allowed, (outcomes, server.log_text()[-3000:])
    finally:
        for proc in procs:
            if proc.is_running():
                proc.rlimit(psutil.RLIMIT_NOFILE, limits[proc.pid])
        for sock in waiting:
            sock.close()
    held.sendall(QUIT)
    assert read_to_eof(held) == b""
    held.close()
    converse(address, [b"after"])
    if uvloop:
        assert "Out of file descriptors" not in server.log_text()
        return
    log = wait_logged(server, "File descriptors available again", timeout=30.0)
    episodes, ends = log.count("Out of file descriptors"), log.count("File descriptors available again")
    # One warning per process at most, not one per attempt. A prefork worker can run out with its
    # queue empty (the kernel checks descriptors first): it has nothing to accept, so no end line yet.
    assert 1 <= ends <= episodes <= len(procs), log[-3000:]
    assert ends == episodes or variant == "prefork", log[-3000:]
    assert_clean(server)


def _every_worker_serving(procs: list[psutil.Process], address: tuple[str, int], port: int) -> None:
    """Connect until each prefork worker has answered one (its event loop runs), then let those go."""
    probes: list[socket.socket] = []
    try:
        while any(established(proc, port) == 0 for proc in procs) and len(probes) < 64:
            sock = socket.create_connection(address, timeout=10)
            probes.append(sock)
            sock.sendall(b"probe")
            assert sock.recv(16) == REPLY
        assert all(established(proc, port) for proc in procs), "the kernel never gave a worker a connection"
    finally:
        for sock in probes:
            sock.close()
    # the held client alone is left: the workers' descriptor counts are what they will be
    assert wait_for(lambda: sum(established(proc, port) for proc in procs) == 1, 10.0)


def _reply_or_closed(sock: socket.socket) -> bytes:
    try:
        return sock.recv(16)
    except ConnectionResetError:  # shed with our message unread: a reset, not a FIN
        return b""


# -- stopping -------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_clients_connected(serve: Callable[..., RunningServer], signum: int) -> None:
    server = serve()
    workers = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
    talking = socket.create_connection(server.address, timeout=5)
    talking.sendall(b"hello")
    assert talking.recv(16) == REPLY
    silent = socket.create_connection(server.address, timeout=5)
    half = socket.create_connection(server.address, timeout=5)
    half.sendall(b"h")
    try:
        server.process.send_signal(signum)
        try:
            # The promise is "stops within 2 s" (1 s for clients, 1.5 s for prefork's workers); a loaded
            # CI machine gets room before it counts as hung.
            code = server.process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc = psutil.Process(server.pid)  # what it was doing, for the next time this is seen
            pytest.fail(f"server still running 10 s after {signal.Signals(signum).name}: status {proc.status()}, "
                        f"{proc.num_threads()} threads, cpu {proc.cpu_times()}; log: {server.log_text()[-1500:]!r}")
        assert code == 0, server.log_text()[-2000:]
        assert not psutil.pid_exists(server.pid)
        for pid in workers:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        for sock in (talking, silent):
            try:
                assert read_to_eof(sock) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in (talking, silent, half):
            sock.close()
    assert "Traceback" not in server.log_text()
    assert server.log_text().rstrip().endswith("Server stopped")


# -- variant-specific -----------------------------------------------------------------
def test_pool_queues_connections_beyond_its_workers(start: Start) -> None:
    server = start("pool", extra_args=("--workers", "2"))
    first, second, third = (socket.create_connection(server.address, timeout=5) for _ in range(3))
    try:
        for sock in (first, second):
            sock.sendall(b"served")
            assert sock.recv(16) == REPLY
        third.sendall(b"queued")
        third.settimeout(0.5)
        with pytest.raises(socket.timeout):
            third.recv(16)  # both workers are busy with the first two
        third.settimeout(5)
        first.sendall(QUIT)
        assert third.recv(16) == REPLY  # a worker is free: the queued connection is served
    finally:
        for sock in (first, second, third):
            sock.close()


def _run_server(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    "args",
    [
        ["pool", "--workers", "0"], ["prefork", "--processes", "x"], ["asyncio", "--loop", "trio"],
        ["threaded", "--idle-timeout", "0"], ["selectors", "--idle-timeout", "-1"], ["asyncio", "--idle-timeout", "nan"],
        ["pool", "--idle-timeout", "inf"], ["threaded", "--delay-ms", "5"],  # test-only: tests/slow_server.py
    ],
)  # fmt: skip
def test_bad_options_are_one_line_errors(args: list[str]) -> None:
    result = _run_server([*args, "--port", "0"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error:" in result.stderr.splitlines()[-1]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("variant", ["asyncio", "prefork"])
def test_uvloop_missing_is_a_one_line_error(tmp_path: Path, variant: str) -> None:
    (tmp_path / "uvloop.py").write_text("raise ImportError('No module named uvloop')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = _run_server([variant, "--loop", "uvloop", "--port", "0"], env=env)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == ["error: --loop uvloop: uvloop is not installed (pip install uvloop)"]
    assert re.search(r"Serving on", result.stdout) is None
