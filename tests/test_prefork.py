"""Prefork's own behaviour: workers sharing one port, a worker that dies replaced, a crash loop capped.

Real processes on 127.0.0.1, ports from the OS (the conformance suite for every variant is test_variants.py).
"""

from __future__ import annotations

import re
import socket
from typing import Callable

import psutil
import pytest
from helpers import converse, established, wait_for, wait_logged

from harness.server_process import RunningServer
from server.prefork import MAX_RESTARTS
from server.protocol import REPLY

Start = Callable[..., RunningServer]

pytestmark = pytest.mark.slow  # every test here starts a process


def _listening_ports(proc: psutil.Process) -> list[int]:
    return [c.laddr.port for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN]


def test_prefork_workers_share_the_port(start: Start) -> None:
    server = start("prefork", extra_args=("--processes", "2"), log_level="INFO")
    parent = psutil.Process(server.pid)
    assert wait_for(lambda: len(parent.children()) == 2, 30.0)
    workers = parent.children()
    # the parent closes its listener once both are forked (it holds none then: it would get a share)
    assert wait_for(lambda: _listening_ports(parent) == [], 10.0), _listening_ports(parent)
    for worker in workers:
        assert _listening_ports(worker) == [server.port]  # one SO_REUSEPORT listener each
    clients = [socket.create_connection(server.address, timeout=5) for _ in range(40)]
    try:
        for sock in clients:
            sock.sendall(b"hi")
            assert sock.recv(16) == REPLY
        counts = [established(worker, server.port) for worker in workers]
        assert sum(counts) == 40 and min(counts) > 0, f"the kernel did not spread connections: {counts}"
    finally:
        for sock in clients:
            sock.close()
    assert server.log_text().count("Serving on") == 1


def test_prefork_replaces_a_worker_that_dies(start: Start) -> None:
    server = start("prefork", extra_args=("--processes", "2"))
    parent = psutil.Process(server.pid)
    assert wait_for(lambda: len(parent.children()) == 2, 30.0)
    victim = parent.children()[0]
    victim.kill()
    log = wait_logged(server, f"(pid {victim.pid}) died (killed by SIGKILL); replaced by pid ", timeout=30.0)
    new_pid = int(re.search(rf"\(pid {victim.pid}\) died .*; replaced by pid (\d+)", log).group(1))
    survivor = next(p.pid for p in parent.children() if p.pid != new_pid)
    assert wait_for(lambda: {p.pid for p in parent.children()} == {survivor, new_pid}, 30.0)
    # The replacement listens on the port (its own SO_REUSEPORT listener), and everyone is served.
    assert wait_for(lambda: _listening_ports(psutil.Process(new_pid)) == [server.port], 30.0)
    for _ in range(10):
        converse(server.address, [b"still served"])
    assert server.stop(timeout=10.0) == 0


def test_prefork_stops_replacing_workers_in_a_crash_loop(start: Start) -> None:
    """A worker that keeps dying is replaced a few times, then not: no fork bomb."""
    server = start("prefork", extra_args=("--processes", "2"))
    parent = psutil.Process(server.pid)
    assert wait_for(lambda: len(parent.children()) == 2, 30.0)
    for death in range(MAX_RESTARTS + 1):
        victim = parent.children()[0]
        victim.kill()
        wait_logged(server, f"(pid {victim.pid}) died (killed by SIGKILL);", timeout=30.0)
        if death < MAX_RESTARTS:
            assert wait_for(lambda: len(parent.children()) == 2, 30.0)
    log = server.log_text()
    assert log.count("; replaced by pid") == MAX_RESTARTS
    assert "not replaced" in log.splitlines()[-1] and "1 of 2 left" in log.splitlines()[-1], log[-2000:]
    assert len(parent.children()) == 1
    converse(server.address, [b"the last worker still serves"])
    assert server.stop(timeout=10.0) == 0
