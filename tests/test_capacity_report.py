"""The capacity search in the report: table, CSV, findings and plots from ``capacity.json`` alone."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from report_runs import write_run

from harness.cli import build_parser, capacity_argv
from harness.results.capacity import Capacity, CapacityEntry, CapacityResults, Trial, write_capacity
from reports import build_report
from reports.capacity_report import capacity_csv, capacity_findings

PNG = b"\x89PNG\r\n\x1a\n"


def trial(load: int, verdict: str, p99_ms: float, bound: bool = False) -> Trial:
    reason = {"pass": "p99 under the SLO", "fail": f"p99 {p99_ms:g} ms, over the 10 ms SLO",
              "invalid": "the machine had 0% idle CPU"}[verdict]  # fmt: skip
    return Trial(load, verdict, reason, p99_us=p99_ms * 1000, p99_lower_bound=bound, p50_us=p99_ms * 300,  # type: ignore[arg-type]
                 asked=float(load), achieved=float(load))


def results() -> CapacityResults:
    server = Capacity(4000, 4400, "server", "holds 4,000 msg/s; at 4,400 msg/s: p99 ≥ 1.20 s, over the 10 ms SLO "
                      "[server CPU 99% of one core]", confirmed=True,
                      trials=(trial(1000, "pass", 1), trial(2000, "pass", 2), trial(4000, "pass", 5),
                              trial(8000, "fail", 1500, bound=True), trial(4400, "fail", 1200, bound=True)))
    generator = Capacity(16000, None, "generator", "at 32,000 msg/s the generator was the bottleneck",
                         trials=(trial(16000, "pass", 1), trial(32000, "invalid", 30)))
    never = Capacity(None, 1000, "server", "fails already at 1,000 msg/s: 68 of 100 users left unanswered",
                     trials=(trial(1000, "fail", 5000, bound=True),))
    return CapacityResults("rate", 10.0, 0.1, 1, run_id="run-a", entries=(
        CapacityEntry("threaded", server, users=100), CapacityEntry("asyncio", generator, users=100),
        CapacityEntry("pool", never, users=100)))


def test_findings_name_each_limit_and_say_at_least_where_the_server_never_failed() -> None:
    texts = [f.text for f in capacity_findings(results())]
    assert texts[0].startswith("threaded at 100 users: holds 4,000 msg/s, fails at 4,400 msg/s: holds")
    assert "server CPU 99% of one core" in texts[0]
    assert texts[1].startswith("asyncio at 100 users: holds ≥ 16,000 msg/s; the search was stopped by the generator")
    assert "before the server failed" in texts[1]
    assert texts[2].startswith("pool at 100 users: held the SLO at no load tried (from 1,000 msg/s)")
    assert texts[3] == ("Most load held: asyncio at 100 users (≥ 16,000 msg/s); least: threaded at 100 users "
                        "(4,000 msg/s).")


def test_the_csv_has_a_row_per_design_with_bounds_and_blanks_for_what_was_not_reached() -> None:
    rows = list(csv.DictReader(io.StringIO(capacity_csv(results()))))
    assert [(r["variant"], r["holds"], r["holds_lower_bound"], r["fails"], r["limited_by"]) for r in rows] == [
        ("threaded", "4000", "no", "4400", "server"), ("asyncio", "16000", "yes", "", "generator"),
        ("pool", "", "no", "1000", "server")]
    assert rows[0]["unit"] == "msg/s" and rows[0]["confirmed"] == "yes" and rows[0]["trials"] == "5"


@pytest.mark.parametrize("inside", [".", "capacity"], ids=["search", "main-job"])
def test_the_report_of_a_folder_with_a_capacity_search_shows_table_plots_and_findings(tmp_path: Path, inside: str) -> None:
    run = write_run(tmp_path / "run")
    (run / inside).mkdir(exist_ok=True)
    write_capacity(run / inside, results())
    html = build_report(run).read_text()
    section = html[html.index('id="capacity"'):]
    assert "4,000 msg/s (confirmed)" in section and "≥ 16,000 msg/s" in section and "none" in section
    assert html.index('id="capacity"') < html.index('id="summary"')  # the search's answer comes first
    assert "Most load held: asyncio" in html
    out = run / "report.html"
    plots = sorted((out.parent / "plots").glob("capacity-*.png"))
    assert [p.name for p in plots] == ["capacity-00.png", "capacity-01.png", "capacity-02.png"]
    assert all(p.read_bytes().startswith(PNG) for p in plots)
    assert (out.parent / "capacity.csv").read_text().count("\n") == 4


def test_the_main_job_searches_the_designs_it_swept_with_their_server_options(tmp_path: Path) -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "--variants", "pool,asyncio", "--backlog", "64", "--server-arg=--log-level=INFO"])
    search = parser.parse_args(capacity_argv(run, tmp_path / "capacity"))
    assert search.command == "capacity" and search.axis == "users" and search.rate_per_user > 0
    assert tuple(search.variants) == ("pool", "asyncio") and search.backlog == 64 and search.out == tmp_path / "capacity"
    assert search.server_arg == ["--log-level=INFO"] and search.budget > 0
    assert search.locust_arg[-1] == "--messages-per-session=1000"  # the sweep's long sessions: no reconnect gaps
    assert parser.parse_args(["run", "--no-capacity"]).no_capacity
