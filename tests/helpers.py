"""Small real-socket clients and psutil probes for the server tests (no mocks)."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import random
import selectors
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.results.histogram_file import HistogramFile, load_histogram_file
from server.protocol import QUIT, REPLY

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
#: Below pytest's own timeout (pyproject.toml), so a stuck child is killed by the test, not left behind.
RUN_TIMEOUT = 90


def free_port() -> int:
    """A port nobody listens on (for refused-connection tests; never bound by a server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last truth."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(interval)
    return True


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """:func:`wait_for`, failing the test with ``what`` when ``timeout`` seconds pass."""
    if not wait_for(predicate, timeout, interval=0.02):
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def forked_call(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in a forked child, which may import Locust (and so gevent) without patching this process.

    For a test that needs one of Locust's own functions on its data; the child's result comes back pickled.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(func(*args), out)
        except BaseException:  # noqa: BLE001 - the parent reports the missing result
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert data and status == 0, f"{func.__name__} failed in the forked child (status {status})"
    return pickle.loads(data)


def locust_argv(scenario: str | Path, *args: str) -> list[str]:
    """``python -m locust -f SCENARIO ARGS``: a file of scenarios/ by name, or any locustfile path."""
    path = Path(scenario) if os.sep in str(scenario) else SCENARIOS / scenario
    return [sys.executable, "-m", "locust", "-f", str(path), *args]


@dataclass
class LocustResult:
    code: int
    output: str
    hdr: HistogramFile | None = None
    locust: dict[str, dict[str, Any]] = field(default_factory=dict)  # Locust's own --json entries by name


def run_locust(
    scenario: str | Path, tmp: Path, host: str, *args: str, users: int = 5, seconds: int = 3
) -> LocustResult:
    """A headless run in its own session; returns its exit code, output, histogram file and Locust's counts."""
    hdr, stats = tmp / "hdr.json", tmp / "locust"
    if "--processes" in args and "--master-bind-host" not in args:
        # Locust's master binds every interface on 5557 unless told otherwise: loopback, a free port
        port = str(free_port())
        args = (*args, "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                "--master-host", "127.0.0.1", "--master-port", port)  # fmt: skip
    argv = locust_argv(scenario) + [
        "--headless", "-u", str(users), "-r", "100", "-t", f"{seconds}s", "--host", host,
        "--hdr-file", str(hdr), "--json-file", str(stats), "--only-summary", *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # a locustfile outside the project imports it
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        kill_group(proc)
    result = LocustResult(proc.returncode, output)
    if hdr.exists():
        result.hdr = load_histogram_file(hdr)
    stats_file = tmp / "locust.json"
    if stats_file.exists():
        result.locust = {e["name"]: e for e in json.loads(stats_file.read_text())}
    return result


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child started with ``start_new_session`` and everything it started (Locust's workers)."""
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def assert_counts_match(result: LocustResult) -> None:
    """Every request name: histogram count + failures == Locust's own request count."""
    hdr, locust = result.hdr, result.locust
    assert hdr is not None and locust, result.output
    for name, entry in locust.items():
        failed = sum(hdr.failures.get(name, {}).values())
        assert entry["num_failures"] == failed, (name, entry["num_failures"], failed)
        assert hdr.names[name].count + failed == entry["num_requests"], name


def converse(address: tuple[str, int], messages: list[bytes], timeout: float = 10.0) -> int:
    """One polite client: each message then its ``-``, then quit and wait for EOF; return its port."""
    with socket.create_connection(address, timeout=timeout) as sock:
        port = sock.getsockname()[1]
        for message in messages:
            sock.sendall(message)
            assert sock.recv(16) == REPLY, f"no reply to {message!r}"
        sock.sendall(QUIT)
        assert read_to_eof(sock) == b""
    return port


def read_to_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the peer sends until it closes (bounded by the socket's timeout)."""
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        assert sum(map(len, chunks)) < limit


@dataclass
class _Client:
    sock: socket.socket
    sent: int = 0
    replies: int = 0
    state: str = "connecting"  # connecting -> waiting -> quitting -> done | failed
    error: str = ""
    due: float = 0.0  # with spread: when a connected client sends its first message (-1: sent)


def run_clients(
    address: tuple[str, int], clients: int, messages: int, timeout: float, spread: float = 0.0
) -> list[str]:
    """``clients`` concurrent clients in one selectors loop, each ``messages`` round trips then quit.

    Every connect is started at once. With ``spread``, each client sends its first
    message a random 0 to ``spread`` seconds after connecting: on Linux, a connect
    that overflowed the accept queue completes through a SYN cookie only when the
    client's first data arrives, and clients that all retransmit in the same
    millisecond keep overflowing a 7-slot queue together (backoff 0.2, 0.4, 0.8 s...).
    Returns one problem per client that did not finish cleanly (empty: all served).
    """
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, _Client] = {}
    for _ in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(code, f"connect to {address} failed at once")
        pending[sock] = client = _Client(sock)
        sel.register(sock, selectors.EVENT_WRITE, client)
    problems: list[str] = []
    deadline = time.monotonic() + timeout
    rng = random.Random(len(pending))
    try:
        while pending and time.monotonic() < deadline:
            now = time.monotonic()
            for key, _mask in sel.select(0.02 if spread else 0.2):
                client = key.data
                if client.state == "connecting" and spread and client.due == 0.0:
                    client.due = now + rng.uniform(0.0, spread)
                    sel.unregister(client.sock)  # connected: nothing to watch until it sends
                    continue
                if not _step(client, messages, sel):
                    if client.state != "done":
                        problems.append(f"{client.state}: {client.error}")
                    sel.unregister(client.sock)
                    client.sock.close()
                    del pending[client.sock]
            for client in pending.values():
                if client.state == "connecting" and 0.0 < client.due <= now:
                    client.due = -1.0  # due: send now
                    sel.register(client.sock, selectors.EVENT_WRITE, client)
        for client in pending.values():
            problems.append(f"timed out {client.state} after {client.replies} replies")
    finally:
        for sock in pending:
            sock.close()
        sel.close()
    return problems


def _step(client: _Client, messages: int, sel: selectors.BaseSelector) -> bool:
    """Advance one client; return False once it is done or failed."""
    sock = client.sock
    try:
        if client.state == "connecting":
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, errno.errorcode.get(code, str(code)))
            sel.modify(sock, selectors.EVENT_READ, client)
            client.state = "waiting"
            return _send_next(client, messages)
        data = sock.recv(4096)
        if client.state == "quitting":
            if data:
                client.state, client.error = "failed", f"data after quit: {data[:20]!r}"
                return False
            client.state = "done"
            return False
        if not data or data != REPLY * len(data) or len(data) != 1:
            client.state, client.error = "failed", f"reply {data[:20]!r} after {client.replies}"
            return False
        client.replies += 1
        return _send_next(client, messages)
    except OSError as exc:
        client.state, client.error = "failed", f"{exc.__class__.__name__} after {client.replies} replies"
        return False


def _send_next(client: _Client, messages: int) -> bool:
    if client.sent < messages:
        client.sock.send(f"message {client.sent}".encode())
        client.sent += 1
    else:
        client.sock.send(QUIT)
        client.state = "quitting"
    return True


def process_tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def resources(pid: int) -> tuple[int, int]:
    """(threads, open fds) of the server and its children (prefork)."""
    threads = fds = 0
    for proc in process_tree(pid):
        try:
            threads += proc.num_threads()
            fds += proc.num_fds()
        except psutil.NoSuchProcess:
            pass
    return threads, fds


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by the server and its children."""
    total = 0.0
    for proc in process_tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def running_share(pid: int, seconds: float = 1.0, samples: int = 50) -> float:
    """The share of ``samples`` readings over ``seconds`` in which a thread of ``pid`` was running or runnable.

    A thread that spins is in state R (running, or waiting for a core) at nearly every reading, however busy
    the machine; one that waits in recv() or accept() is in S. Unlike CPU seconds over a wall-clock second,
    this does not shrink when other work shares the cores.
    """
    busy = 0
    folders = [Path(f"/proc/{proc.pid}/task") for proc in process_tree(pid)]  # prefork's workers too
    for _ in range(samples):
        states = []
        for task in (task for folder in folders if folder.exists() for task in folder.iterdir()):
            try:
                states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue  # a thread that just ended
        busy += "R" in states
        time.sleep(seconds / samples)
    return busy / samples


def steady_resources(pid: int, timeout: float = 30.0) -> tuple[int, int]:
    """(threads, fds) once they hold still for three samples in a row: the server is idle."""
    seen = [resources(pid)]

    def steady() -> bool:
        seen.append(resources(pid))
        return len(seen) > 2 and seen[-1] == seen[-2] == seen[-3]

    assert wait_for(steady, timeout, interval=0.1), f"threads and fds never settled: {seen[-5:]}"
    return seen[-1]


def redis_binary(name: str = "redis-server") -> str:
    """A Debian redis tool's path; missing, the test skips, or fails where CI requires it (SWARMBENCH_REQUIRE_REDIS=1)."""
    import shutil

    path = shutil.which(name)
    if path is None:
        if os.environ.get("SWARMBENCH_REQUIRE_REDIS") == "1":
            pytest.fail(f"SWARMBENCH_REQUIRE_REDIS=1 but no {name} on PATH (.ci/run installs redis-server and redis-tools)")
        pytest.skip(f"{name} is not installed")
    return path


class ThreadingServer(socketserver.ThreadingTCPServer):
    """A test's own server (a handler class of the test's), a thread per connection."""

    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def serving(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    """``handler`` served on a loopback port chosen by the OS (yielded), shut down on exit."""
    server = ThreadingServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def failure_messages(tmp: Path) -> list[str]:
    """The Error column of Locust's failures CSV (``--csv TMP/stats``)."""
    with (tmp / "stats_failures.csv").open() as f:
        return [row["Error"] for row in csv.DictReader(f)]


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """``swarmbench ARGV`` run in this process exits 2 with exactly one line on stderr, returned."""
    from harness.cli import main

    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def established(proc: psutil.Process, port: int) -> int:
    """The process's ESTABLISHED connections on local ``port``."""
    return sum(1 for c in proc.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


def wait_logged(server: Any, text: str, timeout: float = 30.0) -> str:
    """The server's log once it holds ``text`` (a RunningServer); fails with the log's tail after ``timeout``."""
    assert wait_for(lambda: text in server.log_text(), timeout), f"{text!r} not in the log:\n{server.log_text()[-2000:]}"
    return server.log_text()
