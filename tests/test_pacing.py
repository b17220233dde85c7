"""The open loop's schedule, alone (no Locust, no sockets)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.forked  # harness.user imports Locust


def test_pacer_resumes_from_now_after_a_connect_and_never_moves_back() -> None:
    """Connect time is connect's: a schedule left behind while connecting is not charged to messages."""
    from time import perf_counter_ns

    from harness.user.pacing import Pacer

    pacer = Pacer(per_user_rate=100.0)
    assert pacer.interval_ns == 10_000_000
    pacer.next_ns = perf_counter_ns() - 3_000_000_000  # three seconds behind, as after a slow connect
    before = perf_counter_ns()
    pacer.resume()
    assert pacer.next_ns >= before
    ahead = perf_counter_ns() + 5_000_000_000
    pacer.next_ns = ahead
    pacer.resume()
    assert pacer.next_ns == ahead
