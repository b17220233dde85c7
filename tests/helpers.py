"""Small real-socket clients and psutil probes for the server tests (no mocks)."""

from __future__ import annotations

import errno
import random
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from server.protocol import QUIT, REPLY


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


def steady_resources(pid: int, timeout: float = 30.0) -> tuple[int, int]:
    """(threads, fds) once they hold still for three samples in a row: the server is idle."""
    seen = [resources(pid)]

    def steady() -> bool:
        seen.append(resources(pid))
        return len(seen) > 2 and seen[-1] == seen[-2] == seen[-3]

    assert wait_for(steady, timeout, interval=0.1), f"threads and fds never settled: {seen[-5:]}"
    return seen[-1]
