"""Source addresses in 127.0.0.0/8: round robin, growth, and IPv6 left alone (real sockets, no Locust)."""

from __future__ import annotations

import pytest

import socket

pytestmark = [pytest.mark.slow, pytest.mark.forked]  # harness.user imports Locust


def test_source_pool_binds_round_robin_and_grows() -> None:
    from harness.user.source_addresses import SourcePool, auto_count

    assert auto_count(10_000, ports=28_232) == 1 and auto_count(20_000, ports=28_232) == 2
    with socket.create_server(("127.0.0.1", 0)) as listener:
        pool = SourcePool("127.0.0.1", 3, auto=True)
        sources = []
        for _ in range(4):
            with socket.socket() as s:
                pool.bind(s)
                s.connect(listener.getsockname())
                sources.append(s.getsockname()[0])
                listener.accept()[0].close()
        assert sources == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
    assert pool.grow(3) and pool.size == 6 and pool.grow(3)  # a second caller sees it grown
    fixed = SourcePool("127.0.0.1", 2, auto=False)
    assert not fixed.grow(2) and fixed.size == 2
    assert SourcePool("::1", 8, auto=True).size == 1  # one IPv6 loopback address: never bound
