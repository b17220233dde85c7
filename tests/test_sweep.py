"""``swarmbench`` end to end: real servers, real Locust runs, real result files and reports."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import free_port, wait_for

from harness.results import load_run

SWEEP = [sys.executable, "-m", "harness", "sweep", "--quiet"]
SHORT = ["--duration", "3s", "--warmup", "1s"]


def swarmbench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout
    )


def start_sweep(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*SWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def server_pids(cells) -> set[int]:  # type: ignore[no-untyped-def]
    return {c.server.pid for c in cells if c.server.pid}


def assert_nothing_left(pids: set[int]) -> None:
    for pid in pids:
        assert wait_for(lambda: not psutil.pid_exists(pid), 5.0), f"server {pid} left running"


def test_sweep_two_variants_two_levels_writes_cells_and_a_full_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [*SWEEP, "--variants", "threaded,asyncio", "--users", "1,4", *SHORT, "--out", str(out),
         "--check", "errors==0", "--check", "message.p99<10s"],
        capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest, cells = load_run(out)
    assert manifest is not None and manifest.outcome == "complete" and manifest.ended_at
    assert manifest.versions["locust"] and manifest.planned == (("threaded", 1), ("threaded", 4), ("asyncio", 1), ("asyncio", 4))
    assert [(c.variant, c.users) for c in cells] == list(manifest.planned)
    for cell in cells:
        assert cell.status == "ok", cell.error
        assert cell.messages > 0 and cell.throughput > 0
        message = cell.latency["message"]
        assert 0 < message.p50_us <= message.p99_us <= message.max_us
        assert cell.latency["connect"].count > 0
        assert cell.server.samples > 0 and cell.server.threads_max >= 1
        assert cell.timeline and any(p.messages_per_s > 0 for p in cell.timeline)
        assert any("locust" in " ".join(cmd) for cmd in cell.commands)
        for name in cell.files.values():
            assert (out / name).exists(), name
        hdr = json.loads((out / cell.files["histograms"]).read_text())
        assert hdr["names"]["message"]["count"] >= cell.messages  # the steady window is part of the run
        # establish, then measure: the window is the one asked for, after every user's first reply
        assert cell.window_s == cell.duration_s and cell.users_not_established == 0
        assert cell.established_at is not None and cell.window_from is not None
        assert cell.window_from >= cell.established_at + cell.warmup_s
        assert cell.latency["connect"].count >= cell.users  # every connect of the cell, the ramp included
        assert cell.spectrum and cell.spectrum[-1][0] == 100.0 and cell.machine is not None
        window_hgrm = out / cell.files["hgrm_message"]
        assert window_hgrm.exists() and (out / "raw" / f"{cell.file_stem}.whole-run.message.hgrm").exists()
        total = re.search(r"TotalCount\s*=\s*([\d.]+)", window_hgrm.read_text())
        assert total is not None and int(float(total.group(1))) == cell.messages  # the .hgrm covers the window
    threaded = {c.users: c for c in cells if c.variant == "threaded"}
    asyncio_ = {c.users: c for c in cells if c.variant == "asyncio"}
    assert threaded[4].server.threads_max > asyncio_[4].server.threads_max == 1
    report = out / "report.html"
    html = report.read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) >= 5
    assert html.count("data:image/png;base64,") >= len(pngs)
    assert (out / "summary.csv").read_text().count("\n") >= 5
    assert "report:" in result.stdout
    assert_nothing_left(server_pids(cells))


def test_ctrl_c_keeps_finished_cells_and_the_report_renders(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_sweep("--variants", "threaded", "--users", "1,2,3", "--duration", "4s", "--warmup", "1s", "--out", str(out))
    try:
        assert wait_for(lambda: any(out.glob("cell-*.json")), 60), "no cell finished"
        time.sleep(1.0)  # into the second cell
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    manifest, cells = load_run(out)
    assert manifest is not None and manifest.outcome == "interrupted"
    assert cells[0].status == "ok" and cells[0].users == 1
    assert all(c.users != 3 for c in cells)
    assert (out / "report.html").exists()
    assert_nothing_left(server_pids(cells))
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]


def test_a_server_killed_mid_sweep_is_recorded_and_the_next_variant_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_sweep("--variants", "threaded,selectors", "--users", "2,3", "--duration", "3s", "--warmup", "1s", "--out", str(out))
    try:
        me = psutil.Process(proc.pid)

        def threaded_server() -> list[psutil.Process]:
            return [p for p in me.children(recursive=True) if "threaded" in " ".join(p.cmdline())]

        assert wait_for(lambda: bool(threaded_server()) and (out / "raw").exists() and any((out / "raw").glob("*.locust.log")), 60)
        time.sleep(1.5)
        for victim in threaded_server():
            victim.kill()
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    manifest, cells = load_run(out)
    by_key = {(c.variant, c.users): c for c in cells}
    died = by_key[("threaded", 2)]
    assert died.status == "server-died" and died.server.died
    assert ("threaded", 3) not in by_key  # its variant ended; the sweep went on
    assert by_key[("selectors", 2)].status == "ok" and by_key[("selectors", 3)].status == "ok"
    assert "the server died" in stderr
    report = (out / "report.html").read_text()
    assert "died" in report
    assert_nothing_left(server_pids(cells))


def test_compare_flags_a_variant_slowed_on_purpose_and_checks_set_the_exit_code(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    common = ["--variants", "asyncio", "--users", "2", *SHORT, "--quiet"]
    assert swarmbench("sweep", *common, "--out", str(before)).returncode == 0
    slowed = swarmbench("sweep", *common, "--out", str(after), "--server-arg=--delay-ms=3")
    assert slowed.returncode == 0, slowed.stderr
    result = swarmbench("compare", str(before), str(after), "--check", "ratio.message.p50<=1.5")
    assert result.returncode == 1
    broken = [line for line in result.stderr.splitlines() if line.startswith("check ")]
    assert len(broken) == 1 and "asyncio u=2" in broken[0] and "ratio.message.p50" in broken[0]
    assert "asyncio" in result.stdout and (after / "compare.html").exists()
    same = swarmbench("compare", str(before), str(before), "--out", str(tmp_path / "same.html"), "--check", "ratio.throughput>=0.99")
    assert same.returncode == 0, same.stderr
    impossible = swarmbench("compare", str(before), str(before), "--out", str(tmp_path / "x.html"), "--check", "throughput>=1e12")
    assert impossible.returncode == 1 and "throughput" in impossible.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sweep", "--variants", "nosuch"], "unknown variant"),
        (["sweep", "--scenario", "nosuch"], "unknown scenario"),
        (["sweep", "--users", "10,x"], "user counts"),
        (["sweep", "--duration", "soon"], "not a duration"),
        (["sweep", "--target", "192.0.2.1:80"], "loopback"),
        (["sweep", "--target", "127.0.0.1:notaport"], "host"),
        (["sweep", "--check", "p99 is low"], "cannot read check"),
        (["sweep", "--locust-arg=--users=5"], "sets this itself"),
        (["report", "/nonexistent/results"], "not a results folder"),
        (["compare", "/nonexistent/a", "/nonexistent/b"], "not a results folder"),
    ],
)
def test_bad_arguments_are_one_line_errors_with_exit_2(args: list[str], needle: str) -> None:
    result = swarmbench(*args, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_a_target_that_refuses_is_found_before_any_cell(tmp_path: Path) -> None:
    result = swarmbench("sweep", "--target", f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "r"), timeout=30)
    assert result.returncode == 2 and "does not accept connections" in result.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_results_are_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "run.json").write_text("{}")
    result = swarmbench("sweep", "--out", str(out), timeout=30)
    assert result.returncode == 2 and "never overwritten" in result.stderr
    assert (out / "run.json").read_text() == "{}"
