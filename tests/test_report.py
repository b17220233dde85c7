"""The report from result files: plots, table, CSV, compare, bad input, and a real browser.

Result folders are a synthetic sweep's (tests/report_runs.py). The findings themselves
(what the report says of the numbers) are test_findings.py's.
"""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from report_runs import PROFILE, T0, make_cell, write_run

from harness.results import ResultError, RunManifest, replace_manifest, write_cell
from reports import build_comparison_report, build_report, compare_runs, render_comparison_text
from harness.cli import main
from reports.summary import load_cells, render_summary_text, summary_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


#: Drawing every plot with matplotlib takes seconds: these are outside the fast tier.
RENDERS = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("results") / "run-a")


@pytest.fixture(scope="module")
def report(run_dir: Path) -> Path:
    return build_report(run_dir)


@pytest.fixture(scope="module")
def comparison_html(tmp_path_factory: pytest.TempPathFactory, run_dir: Path) -> Path:
    slower = write_run(tmp_path_factory.mktemp("results") / "run-b", "run-b", slow={"asyncio": 1.5, "threaded": 1.03},
                       skip=(("threaded", 500),))
    return build_comparison_report(compare_runs(run_dir, slower), slower)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@RENDERS
def test_every_plot_is_a_png(report: Path) -> None:
    plots = report.parent / "plots"
    names = {p.stem for p in plots.glob("*.png")}
    assert {"latency", "throughput", "threads", "resources", "connect"} <= names
    cells = [(v, u) for v in PROFILE for u in PROFILE[v]]
    assert {f"timeline-{v}-u{u:05d}" for v, u in cells} <= names
    for path in plots.glob("*.png"):
        width, height = png_size(path.read_bytes())
        assert width > 200 and height > 200, path.name


@RENDERS
def test_html_embeds_every_image_and_nothing_external(report: Path) -> None:
    html = report.read_text()
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    files = {p.read_bytes() for p in (report.parent / "plots").glob("*.png")}
    assert len(uris) == len(files) == 6 + 12
    assert {base64.b64decode(u) for u in uris} == files
    assert not re.search(r'(src|href)="(https?:|//|/)', html)
    assert 'id="summary-table"' in html and 'id="cells-table"' in html


@RENDERS
def test_summary_csv_and_table(report: Path, run_dir: Path) -> None:
    with open(report.parent / "summary.csv", newline="") as f:
        rows = {(r["variant"], int(r["users"])): r for r in csv.DictReader(f)}
    assert len(rows) == 13
    assert rows[("threaded", 500)]["p99_ms"] == "85.000" and rows[("threaded", 500)]["threads_max"] == "502"
    assert rows[("threaded", 500)]["listen_overflows"] == "412"
    assert rows[("asyncio", 500)]["generator_saturated"] == "yes"
    assert rows[("asyncio", 100)]["generator_saturated"] == "no"
    assert rows[("pool", 500)]["status"] == "server-died"
    assert rows[("pool", 1000)]["status"] == "missing" and rows[("pool", 1000)]["p99_ms"] == ""
    html = report.read_text()
    assert re.search(r'<tr class="saturated">\s*<td[^>]*>.*?asyncio</td><td class="num">500<', html)
    assert re.search(r'<tr class="missing">\s*<td[^>]*>.*?pool</td><td class="num">1,000<', html)
    manifest, cells = load_cells(run_dir)
    rows_ = summary_rows(manifest, cells)
    assert [r.variant for r in rows_][:4] == ["threaded"] * 4
    text = render_summary_text(rows_).splitlines()
    assert text[0].split()[:6] == ["Variant", "Users", "Ops/sec", "Asked/sec", "Window", "s"] and len(text) == 2 + 13
    assert text[2 + 3].split()[:9] == ["threaded", "500", "9,500", "closed", "8", "30.000", "25.000", "85.000", "136.000"]


@RENDERS
def test_compare_flags_the_slowed_variant(run_dir: Path, comparison_html: Path) -> None:
    slower = comparison_html.parent
    comp = compare_runs(run_dir, slower)
    flagged = {p.key: set(p.regressions) for p in comp.regressions}
    assert flagged == {("asyncio", u): {"throughput", "p50", "p99", "p999"} for u in (1, 10, 100)}
    pair = next(p for p in comp.pairs if p.key == ("asyncio", 10))
    assert pair.ratio("p99") == pytest.approx(1.5) and pair.ratio("throughput") == pytest.approx(1 / 1.5)
    assert comp.only_a == (("threaded", 500),) and comp.only_b == ()
    assert compare_runs(run_dir, run_dir).regressions == ()
    assert not compare_runs(run_dir, slower, threshold=0.6).regressions
    text = render_comparison_text(comp)
    assert "REGRESSION" in text and "3 of 11 paired cell(s) regressed beyond 10%" in text
    assert "Only in A: threaded@500" in text
    html = comparison_html.read_text()
    assert html.count('<img src="data:image/png;base64,') == 2 and 'id="comparison-table"' in html


def test_bad_folders_raise_result_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ResultError):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultError, match="no Swarmbench results"):
        build_report(tmp_path / "empty")
    only_manifest = tmp_path / "started"
    only_manifest.mkdir()
    replace_manifest(only_manifest, RunManifest(run_id="r", started_at=T0))
    with pytest.raises(ResultError, match="no cell results"):
        build_report(only_manifest)
    with pytest.raises(ResultError):
        compare_runs(tmp_path / "empty", only_manifest)
    (only_manifest / "cell-x-u00001.json").write_text("{not json")
    assert main(["report", str(only_manifest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid JSON" in err and "Traceback" not in err
    for args in (["report", str(tmp_path), "--slo-ms", "-1"], ["report", str(tmp_path), "--slo-ms", "x"],
                 ["compare", "a", "b", "--threshold", "1.5"], ["compare", "a", "b", "--threshold", "nan"],
                 ["report", "a", "b", "c"]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err, err


@RENDERS
def test_main_builds_a_report_of_a_run_without_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "bare"
    folder.mkdir()
    for n, users in enumerate((1, 10)):
        write_cell(folder, make_cell("threaded", users, n))
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(folder), "--out", str(out), "--slo-ms", "1"]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    html = out.read_text()
    assert "run.json not found" in html and "up to 1 user" in html
    assert (out.parent / "summary.csv").exists() and not (folder / "report.html").exists()


# -- a real browser ------------------------------------------------------------------------------

def chromium() -> str | None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and os.environ.get("SWARMBENCH_REQUIRE_CHROMIUM") == "1":
        pytest.fail("SWARMBENCH_REQUIRE_CHROMIUM=1 but no chromium on PATH")
    return exe


def dump_dom(exe: str, page: Path, profile: Path) -> str:
    """The DOM after load, from headless Chromium; the process group is always killed."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 90 s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0 or out, err.decode(errors="replace")[-2000:]
    return out.decode("utf-8", errors="replace")


@RENDERS
@pytest.mark.timeout(240)
def test_report_renders_in_headless_chromium(report: Path, comparison_html: Path, tmp_path: Path) -> None:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (set SWARMBENCH_REQUIRE_CHROMIUM=1 to require it)")
    for page, images, tables in ((report, 18, ("summary-table", "cells-table")), (comparison_html, 2,
                                                                                    ("comparison-table",))):
        dom = dump_dom(exe, page, tmp_path / f"profile-{page.stem}")
        loaded = re.search(r'<body[^>]*data-images-loaded="([^"]*)"', dom)
        assert loaded is not None, dom[:500]
        assert loaded.group(1) == f"{images}/{images}"
        for table in tables:
            assert re.search(rf'<table id="{table}">.*?<tbody>\s*<tr', dom, re.S), table


# -- hostile text, concurrent builds, missing figures, server notes ---------------------------------------

@RENDERS
def test_csv_fields_that_could_start_a_formula_are_quoted(tmp_path: Path) -> None:
    from dataclasses import replace

    from reports.summary import csv_text, rows_to_csv

    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert csv_text(f"{start}1+1") == f"'{start}1+1"
    assert csv_text("threaded") == "threaded" and csv_text("") == ""
    folder = tmp_path / "r"
    folder.mkdir()
    hostile = replace(make_cell("threaded", 1, 0), notes=('=HYPERLINK("http://127.0.0.1/","x")',))
    write_cell(folder, hostile)
    build_report(folder)
    with open(folder / "summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["note"] == "'" + hostile.notes[0]
    assert rows_to_csv(summary_rows(None, [hostile])).count("\n'") == 0  # only the field is quoted


@pytest.mark.slow
def test_two_report_builds_on_one_folder_at_once_both_succeed(tmp_path: Path) -> None:
    import sys

    folder = write_run(tmp_path / "run")
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "report", str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for _ in range(2)]
    try:
        results = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], results
    assert (folder / "report.html").read_text().rstrip().endswith("</html>")
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@RENDERS
def test_a_worker_that_died_during_the_cell_is_noted_and_shown(tmp_path: Path) -> None:
    from dataclasses import replace

    from harness.assemble import log_size, server_log_notes

    log = tmp_path / "server-prefork.log"
    log.write_text("Serving on 127.0.0.1:4000 (prefork, 2 workers)\nWorker 0 (pid 11) died (signal 9); replaced by pid 12\n")
    offset = log_size(log)  # the cell starts here: the earlier death belongs to an earlier cell
    with open(log, "a") as f:
        f.write("client 127.0.0.1:5000 connected\nWorker 1 (pid 13) died (exit code 1); replaced by pid 14\x1b[31m\n")
    notes = server_log_notes(log, offset)
    assert notes == ("Worker 1 (pid 13) died (exit code 1); replaced by pid 14?[31m",)
    assert server_log_notes(log, log_size(log)) == () and server_log_notes(tmp_path / "none.log", 0) == ()
    folder = tmp_path / "r"
    folder.mkdir()
    write_cell(folder, replace(make_cell("threaded", 10, 0), notes=notes))
    html = build_report(folder).read_text()
    assert "the server log says: Worker 1 (pid 13) died" in html
