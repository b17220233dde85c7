"""The kernel's TCP counters: parsing, wrap-around, and a real listen-queue overflow on loopback."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
from helpers import wait_for

from harness.kernel import WATCHED, counter_deltas, parse_counter_table, read_tcp_counters


def test_kernel_counters_parse_and_wrap() -> None:
    counters = read_tcp_counters()
    if not counters:
        pytest.skip("no /proc/net/netstat here (not Linux)")
    for name in ("ListenOverflows", "ListenDrops", "EstabResets", "AttemptFails"):
        assert name in counters
    assert set(counters) <= set(WATCHED)
    table = "TcpExt: A B\nTcpExt: 1 2\nIpExt: A\nIpExt: 9\n"
    assert parse_counter_table(table, "TcpExt:") == {"A": 1, "B": 2}
    assert counter_deltas({"A": 5, "B": 1}, {"A": 8, "C": 3}, names=("A", "B")) == {"A": 3, "B": None}
    assert counter_deltas({"A": 2**32 - 1}, {"A": 1}, names=()) == {"A": 2}


def test_unreadable_counters_are_none_not_zero(tmp_path: Path) -> None:
    """A counter file that cannot be read is 'not measured', never 'the kernel counted none'."""
    unreadable = ((str(tmp_path / "no-such-netstat"), "TcpExt:"), (str(tmp_path), "Tcp:"))  # missing; a folder
    before = read_tcp_counters(sources=unreadable)
    after = read_tcp_counters(sources=unreadable)
    assert before == {} and after == {}
    deltas = counter_deltas(before, after)
    assert set(deltas) == set(WATCHED) and all(v is None for v in deltas.values())
    partial = counter_deltas({"ListenOverflows": 3}, {"ListenOverflows": 5})
    assert partial["ListenOverflows"] == 2 and partial["ListenDrops"] is None


@pytest.mark.slow
def test_listen_overflow_raises_kernel_counters() -> None:
    """Connects beyond a listen(1) queue that nobody accepts: the kernel drops their SYNs."""
    before = read_tcp_counters()
    if "ListenOverflows" not in before:
        pytest.skip("no ListenOverflows counter here")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    socks: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # room for 2 in the accept queue; never accepted
        address = listener.getsockname()
        for _ in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            assert sock.connect_ex(address) in (0, errno.EINPROGRESS)

        def dropped() -> bool:
            deltas = counter_deltas(before, read_tcp_counters())
            return deltas["ListenOverflows"] > 0 and deltas["ListenDrops"] > 0

        assert wait_for(dropped, 30), "ListenOverflows and ListenDrops did not rise"
    finally:
        for sock in socks:
            sock.close()
        listener.close()
