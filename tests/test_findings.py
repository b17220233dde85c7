"""The findings and the summary's figures, from a synthetic sweep's results (tests/report_runs.py): no plot drawn.

The rendering (plots, HTML, CSV, compare, a real browser) is test_report.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from report_runs import PROFILE, T0, lat, make_cell, write_run

from harness.results import CellResult, GeneratorStats, RunManifest
from reports.findings import connect_finding, find, miss_reason, slo_limit, thread_finding
from reports.summary import fmt_duration_ms, load_cells


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("results") / "run-a")


def test_slo_finding_picks_the_highest_level_under_the_target(run_dir: Path) -> None:
    manifest, cells = load_cells(run_dir)
    of = {v: [c for c in cells if c.variant == v] for v in PROFILE}
    threaded, asyncio, pool = (slo_limit(v, of[v], 10.0) for v in ("threaded", "asyncio", "pool"))
    assert (threaded.users, threaded.throughput, threaded.first_miss_users) == (10, 9800, 100)
    # asyncio met 10 ms at 500 users too, but its generator was saturated there: that says nothing.
    assert (asyncio.users, asyncio.throughput, asyncio.untested_above) == (100, 15500, (500,))
    assert (pool.users, pool.first_miss_users) == (10, 100)
    assert slo_limit("threaded", of["threaded"], 2.0).users == 10
    assert slo_limit("threaded", of["threaded"], 100.0).users == 500
    none = slo_limit("threaded", of["threaded"], 0.1)
    assert none.users is None and none.first_miss_users == 1
    slo = {f.variant: f for f in find(manifest, cells, 10.0) if f.kind == "slo"}
    assert slo["threaded"].users == 10 and "up to 10 users" in slo["threaded"].text
    assert "9,800 messages/s" in slo["threaded"].text
    assert "no valid figures at 500 users" in slo["asyncio"].text


def test_a_p99_exactly_at_the_slo_misses_it_and_one_microsecond_under_holds_it() -> None:
    """The SLO is "p99 under the target" (the README's words): at the target it is missed, everywhere it is used."""
    cell = make_cell("threaded", 10, 0)
    p99_us = cell.latency["message"].p99_us
    at, above = p99_us / 1000.0, (p99_us + 1) / 1000.0
    assert miss_reason(cell, at) == f"p99 {fmt_duration_ms(p99_us / 1000)}"
    assert miss_reason(cell, above) is None
    assert slo_limit("threaded", [cell], at).users is None
    assert slo_limit("threaded", [cell], above).users == 10


def test_thread_tracking_is_found_for_threaded_only(run_dir: Path) -> None:
    manifest, cells = load_cells(run_dir)
    threads = {f.variant: f for f in find(manifest, cells) if f.kind == "threads"}
    assert set(threads) == set(PROFILE)
    assert "tracks its connections" in threads["threaded"].text
    assert "threads ≈ users + 2" in threads["threaded"].text
    for flat in ("asyncio", "pool"):
        assert "stays flat" in threads[flat].text and "tracks" not in threads[flat].text
    one = [c for c in cells if c.variant == "threaded" and c.users == 1]
    assert thread_finding("threaded", one) is None  # one level proves nothing


def test_connect_jump_is_explained_by_listen_overflows(run_dir: Path) -> None:
    manifest, cells = load_cells(run_dir)
    connect = [f for f in find(manifest, cells) if f.kind == "connect"]
    assert [(f.variant, f.users, f.severity) for f in connect] == [("threaded", 500, "bad")]
    assert "1.03 s at 500 users (412 overflows)" in connect[0].text and "backlog 6" in connect[0].text
    # The same jump with no overflow counted: the listen queue does not explain it.
    cell = next(c for c in cells if c.key == ("threaded", 500))
    quiet = CellResult(**{**{f: getattr(cell, f) for f in cell.__dataclass_fields__},
                          "kernel": {"TcpExt.ListenOverflows": 0}})
    (finding,) = connect_finding("threaded", [quiet], None)
    assert finding.severity == "warn" and "does not explain" in finding.text
    # Counters that could not be read: nothing is claimed about the listen queue.
    unread = CellResult(**{**{f: getattr(cell, f) for f in cell.__dataclass_fields__},
                           "kernel": {"TcpExt.ListenOverflows": None}})
    (finding,) = connect_finding("threaded", [unread], None)
    assert "could not be read" in finding.text and "counted no" not in finding.text
    # A --target server: the harness never set its backlog, so the findings do not name one.
    target = RunManifest(**{**{f: getattr(manifest, f) for f in manifest.__dataclass_fields__},
                            "options": {"backlog": 6, "target": "127.0.0.1:9000"}})
    assert not any("backlog" in f.text for f in find(target, cells))


def test_trouble_findings(run_dir: Path) -> None:
    manifest, cells = load_cells(run_dir)
    found = find(manifest, cells)
    by_kind = {f.kind: f for f in found}
    assert "asyncio at 500 users" in by_kind["generator"].text
    assert "its own loop lag p99 2.50 ms of message p99" in by_kind["generator"].text
    assert "threaded" not in by_kind["generator"].text
    status = [f for f in found if f.kind == "status"]
    assert [(f.variant, f.users) for f in status] == [("pool", 500)]
    assert "server died (exit code -9)" in status[0].text
    assert "pool at 1,000 users" in by_kind["missing"].text
    assert by_kind["headline"].users == 100 and by_kind["headline"].text.startswith("At 100 users: asyncio")


def test_users_left_waiting_at_the_stop_fail_the_slo_and_are_named(run_dir: Path) -> None:
    """A pool that serves 32 of 500 users shows fine latencies for those 32: the others must not vanish."""
    from dataclasses import replace

    from reports.findings import meets_slo

    _, cells = load_cells(run_dir)
    cell = next(c for c in cells if c.variant == "threaded" and c.users == 100)
    assert meets_slo(cell, 1000.0)
    starved = replace(cell, latency={**cell.latency, "unanswered": lat(4000.0, 6900.0, 68)})
    assert not meets_slo(starved, 1000.0)
    found = [f for f in find(None, [starved], 1000.0) if f.kind == "unanswered"]
    assert len(found) == 1 and found[0].severity == "bad"
    assert "68 of 100 users were still waiting" in found[0].text
    # Users that timed out while the run stopped (after the window) count against the SLO too.
    timed_out = replace(cell, failures={}, failures_total={"message": {"ReplyTimeout": cell.latency["message"].count}})
    assert not meets_slo(timed_out, 1000.0)
    (slo,) = [f for f in find(None, [timed_out], 1000.0) if f.kind == "slo"]
    assert "messages failed, though p99 of the answered was" in slo.text


def test_figures_a_cell_never_measured_are_dashes_not_zeros() -> None:
    from reports.summary import row_cells, row_for

    never_ran = CellResult("threaded", 5, "chat", "failed", T0, T0, 1.0, 3.0, error="scenario raised at import")
    texts = row_cells(row_for(never_ran))
    # Ops/sec, window, latency, connect, errors, establishment, threads, CPU, memory: none measured;
    # the asked rate is the sweep's setting (closed loop), not a measurement
    assert texts[2] == "-" and texts[3] == "closed" and texts[4:15] == ("-",) * 11, texts


def test_a_lag_marked_cell_holds_the_slo_a_saturated_one_says_nothing_and_unanswered_users_are_a_miss() -> None:
    """Generator marks and SLO verdicts: only what the server can be credited or blamed for counts."""
    from dataclasses import replace

    from harness.results.cells import LAG_BOUND
    from reports.findings import slo_limit

    base = [make_cell("asyncio", users, n) for n, users in enumerate((1, 10, 100))]
    fine = [replace(c, generator=GeneratorStats(cpu_percent_max=40.0)) for c in base]
    lagged = replace(fine[2], generator_bound=f"{LAG_BOUND} p99 1.20 ms is 50% of message p99 2.40 ms")
    assert slo_limit("asyncio", [*fine[:2], lagged], 10.0).users == 100  # an upper bound that holds
    saturated = replace(fine[2], generator=GeneratorStats(cpu_percent_max=99.0, saturated=True),
                        generator_bound="a Locust process used 99% of a core (over 90%)")
    held = slo_limit("asyncio", [*fine[:2], saturated], 10.0)
    assert held.users == 10 and held.untested_above == (100,)  # says nothing about the server
    left = replace(saturated, latency={**saturated.latency, "unanswered": lat(1000.0, 2000.0, 40)})
    missed = slo_limit("asyncio", [*fine[:2], left], 10.0)
    assert missed.users == 10 and missed.first_miss_users == 100 and "unanswered" in (missed.first_miss_why or "")
