"""Every due message counts: the census at the window's end, the bounds it makes, and who reads them.

The census and the figures are plain functions over plain objects (no Locust, no gevent); one
sweep shows them end to end against a design that leaves users unanswered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.assemble import every_due_message
from harness.checks import cell_metrics, evaluate, parse_check
from harness.results import CellResult, Latency, ResultError, load_run
from harness.results.histogram_file import new_histogram
from harness.census import GROUPS, censored_waits
from reports.findings import miss_reason

S = 1_000_000_000  # ns
MS = 1_000_000


@dataclass
class Pacer:
    """An open-loop schedule, as harness.user.pacing.Pacer holds it."""

    next_ns: int
    interval_ns: int


@dataclass
class Client:
    """The fields the census reads of a TcpClient."""

    busy: int = 0
    pending: int = 0
    pacer: Pacer | None = None
    connected: bool = True


def pacer(next_ns: int, interval_ns: int) -> Pacer:
    return Pacer(next_ns, interval_ns)


# -- the census ----------------------------------------------------------------------------------------------


def test_a_closed_loop_user_counts_its_one_message_once_stuck() -> None:
    now = 100 * S
    clients = [Client(busy=now - 3 * S), Client(busy=now - 200 * MS), Client(), Client(busy=now - 5 * S, connected=False)]
    assert censored_waits(clients, now, 90 * S, now, stuck_ns=S) == [(3_000_000, 1)]


def test_an_open_loop_user_counts_its_message_and_every_slot_due_behind_it_in_the_window() -> None:
    now, start, end = 100 * S, 95 * S, 100 * S
    # 10 msg/s; it waits since 97.0 s for the message due then; the next slot was 97.1 s
    stuck = Client(busy=97 * S + MS, pacer=pacer(97 * S + 100 * MS, 100 * MS))
    waits = censored_waits([stuck], now, start, end, stuck_ns=S)
    assert waits[0] == (3_000_000, 1)  # the message it waits for, from when it was due
    slots = waits[1:]
    assert sum(n for _, n in slots) == 29  # 97.1, 97.2 ... 99.9 s: due in the window, never sent
    true = sorted((now - (97 * S + k * 100 * MS)) // 1000 for k in range(1, 30))
    assert min(w for w, _ in slots) == true[0] == 100_000  # the last slot, due 0.1 s before the end
    assert max(w for w, _ in slots) == true[-1] == 2_900_000  # no group overstates a wait


def test_slots_due_before_the_window_or_after_its_end_are_not_counted() -> None:
    now, start, end = 100 * S, 99 * S, 99_500 * MS  # a window from 99 s to 99.5 s, taken at 100 s
    stuck = Client(busy=90 * S, pacer=pacer(90 * S + 100 * MS, 100 * MS))
    waits = censored_waits([stuck], now, start, end, stuck_ns=S)
    assert waits[0] == (10_000_000, 1)
    assert sum(n for _, n in waits[1:]) == 5  # 99.0, 99.1, 99.2, 99.3, 99.4 s
    assert max(w for w, _ in waits[1:]) == 1_000_000


def test_a_long_backlog_is_bounded_work_and_every_group_is_a_lower_bound() -> None:
    now, start = 100 * S, 40 * S
    stuck = Client(busy=40 * S, pacer=pacer(40 * S + MS, MS))  # 1,000 msg/s, stuck for 60 s: 60,000 slots
    waits = censored_waits([stuck], now, start, now, stuck_ns=S)
    assert len(waits) <= GROUPS + 1
    assert sum(n for _, n in waits[1:]) == 59_999
    # each group is recorded at its smallest wait: the sum of the recorded waits is at most the true sum
    true_sum = sum((now - (40 * S + k * MS)) // 1000 for k in range(1, 60_000))
    assert sum(w * n for w, n in waits[1:]) <= true_sum
    assert sum(w * n for w, n in waits[1:]) >= true_sum * 0.95  # and not by much: 32 groups


def test_young_messages_a_queued_send_and_users_between_messages_are_not_counted() -> None:
    now = 100 * S
    young = Client(busy=now - 10 * MS, pacer=pacer(now + 90 * MS, 100 * MS))  # the window's edge
    queued = Client(pending=7, pacer=pacer(now + 50 * MS, 100 * MS))  # not yet due
    idle = Client(pacer=pacer(now + 50 * MS, 100 * MS))
    assert censored_waits([young, queued, idle], now, 90 * S, now, stuck_ns=S) == []


# -- the figures -----------------------------------------------------------------------------------------------


def hist(values: list[int]):  # type: ignore[no-untyped-def]
    h = new_histogram()
    for v in values:
        h.record_value(v)
    return h


def test_stuck_users_make_p99_a_bound_and_a_few_failures_leave_it_exact() -> None:
    replies = hist([100 + i % 50 for i in range(10_000)])  # 100-149 µs
    stuck = every_due_message(replies, [hist([2_000_000] * 500)])  # 5% of messages waited 2 s
    assert stuck.censored == 500 and stuck.count == 10_500
    assert stuck.p99_us >= 2_000_000 and stuck.lower_bound("p99_us") and stuck.lower_bound("max_us")
    assert not stuck.lower_bound("p50_us")  # under every censored value: exact
    few = every_due_message(replies, [hist([30])])  # one reset 30 µs after it was due
    assert few.censored == 1 and not few.lower_bound("p99_us") and few.lower_bound("min_us")
    assert few.lower_bound("mean_us") and few.lower_bound("max_us")


def test_a_bound_round_trips_as_flags_and_a_wrong_flag_is_one_line() -> None:
    lat = every_due_message(hist([100] * 100), [hist([5_000_000] * 10)])
    data = lat.to_dict()
    assert data["p99_lower_bound"] is True and data["p50_lower_bound"] is False and "bounds" not in data
    assert Latency.from_dict(data) == lat
    plain = Latency.from_dict(every_due_message(hist([100]), []).to_dict())
    assert plain.censored == 0 and "p99_lower_bound" not in plain.to_dict()
    for bad, field in (({**data, "p99_lower_bound": "yes"}, "p99_lower_bound"),
                       ({**data, "censored": 0}, "lower_bound"), ({**data, "censored": 10**9}, "censored")):
        with pytest.raises(ResultError) as info:
            Latency.from_dict(bad, "latency.message")
        assert field in str(info.value) and "\n" not in str(info.value)


def cell(latency: Latency) -> CellResult:
    return CellResult(variant="pool", users=100, scenario="chat", status="ok", started_at=0.0, ended_at=10.0,
                      warmup_s=0.0, duration_s=5.0, throughput=320.0, messages=latency.answered, rate=1000.0,
                      window_s=5.0, latency={"message": latency})  # fmt: skip


def test_checks_and_findings_treat_a_bound_as_at_least() -> None:
    bound = every_due_message(hist([100] * 1000), [hist([1_500_000] * 100)])
    rows = [("pool u=100", cell_metrics(cell(bound)))]
    assert evaluate([parse_check("message.p99>1s")], rows) == []  # at least 1.5 s: shown
    (broken,) = evaluate([parse_check("message.p99<10s")], rows)  # not shown: it may be more
    assert "message.p99 ≥ 1500.159 ms" in broken and "lower bound" in broken
    reason = miss_reason(cell(bound), 10.0)
    assert reason is not None and reason.startswith("p99 ≥ 1.50 s")
    under = every_due_message(hist([100] * 10_000), [hist([5_000] * 150)])  # a bound, but under the SLO
    reason = miss_reason(cell(under), 10.0)
    assert reason is not None and "rests on messages that had no reply" in reason


# -- end to end --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pool_that_leaves_users_waiting_shows_p99_of_seconds_as_a_bound(tmp_path: Path) -> None:
    """Pool (32 threads) at 100 users, open loop: 68 users wait the whole window; asyncio answers all."""
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "sweep", "--quiet", "--variants", "pool,asyncio", "--users", "100",
         "--rate", "500", "--duration", "1s", "--warmup", "1s", "--establish-timeout", "2s",
         "--locust-arg=--messages-per-session=100000", "--out", str(out)],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, cells = load_run(out)
    pool, asyncio_ = sorted(cells, key=lambda c: c.variant != "pool")
    message, answered = pool.latency["message"], pool.latency["message_answered"]
    assert pool.users_not_established == 68 and message.censored >= 68 * 5  # each at 5 msg/s, 1 s and more
    assert message.p99_us >= 2_000_000 and message.lower_bound("p99_us")  # stuck since the ramp
    assert answered.p99_us < message.p99_us and answered.count == pool.messages
    raw = json.loads((out / f"{pool.file_stem}.json").read_text())["latency"]["message"]
    assert raw["p99_lower_bound"] is True and raw["censored"] == message.censored
    assert "p99 ≥ " in result.stdout  # the progress line
    assert asyncio_.latency["message"].censored == 0 and not asyncio_.latency["message"].bounds
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].endswith(",lower_bounds") and "p99_ms" in next(r for r in csv if r.startswith("pool,"))
    assert "≥ " in (out / "report.html").read_text()
