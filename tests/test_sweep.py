"""``swarmbench`` end to end: real servers, real Locust runs, real result files and reports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import free_port, kill_group, wait_for

from harness.results import load_run

pytestmark = pytest.mark.slow

SWEEP = [sys.executable, "-m", "harness", "sweep", "--quiet"]
SHORT = ["--duration", "1s", "--warmup", "0s"]


def swarmbench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout
    )


def start_sweep(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*SWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stop_sweep(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        kill_group(proc)


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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
def test_a_stop_signal_keeps_finished_cells_and_the_report_lists_them(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    # one signal's run builds the report (the same code after any of them: a report is 3 s of a core and more)
    reported = sig == signal.SIGINT
    proc = start_sweep("--variants", "threaded", "--users", "1,2,3", "--duration", "2s", "--warmup", "0s", "--out", str(out),
                       *(() if reported else ("--no-report",)))  # fmt: skip
    try:
        assert wait_for(lambda: any(out.glob("cell-*.json")), 60), "no cell finished"
        # into the second cell: its Locust has written its first console lines
        assert wait_for(lambda: (out / "raw" / "cell-threaded-u00002.locust.log").exists(), 30)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop_sweep(proc)
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + sig), stderr
    assert "Traceback" not in stderr
    manifest, cells = load_run(out)
    assert manifest is not None and manifest.outcome == "interrupted"
    assert cells[0].status == "ok" and cells[0].users == 1
    assert all(c.users != 3 for c in cells)
    statuses = {c.users: c.status for c in cells}
    assert statuses.get(2, "interrupted") == "interrupted"
    if reported:
        report = (out / "report.html").read_text()
        rows = re.findall(r'<tr(?: class="([^"]*)")?>\s*<td[^>]*>.*?threaded</td><td class="num">(\d+)<', report)
        # the finished cell, as a row of its own (marked only if the machine left the generator no idle CPU)
        assert ("", "1") in rows or ("saturated", "1") in rows, rows
        assert ("interrupted" if 2 in statuses else "missing", "2") in rows and ("missing", "3") in rows
        assert "run outcome: interrupted" in report
    else:
        assert not (out / "report.html").exists()
    assert_nothing_left(server_pids(cells))
    # no Locust of the run left (one started as the signal came dies with the sweep: PR_SET_PDEATHSIG)
    assert wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])], 15)


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # gone, or a zombie
        return []


def is_server(cmdline: list[str], variant: str) -> bool:
    """The server's own process (``python -P -m server VARIANT``), not Locust's ``--hdr-file .../cell-VARIANT-...``."""
    return any(cmdline[i : i + 3] == ["-m", "server", variant] for i in range(len(cmdline)))


def test_a_server_killed_mid_sweep_is_recorded_and_the_next_variant_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_sweep("--variants", "threaded,selectors", "--users", "2,3", "--duration", "3s", "--warmup", "0s", "--out", str(out))
    try:
        me = psutil.Process(proc.pid)

        def threaded_server() -> list[psutil.Process]:
            return [p for p in me.children(recursive=True) if is_server(cmdline(p), "threaded")]

        def locust_running() -> bool:
            return any("harness.locust_main" in cmdline(p) for p in me.children(recursive=True))

        log = out / "raw" / "cell-threaded-u00002.locust.log"
        assert wait_for(lambda: bool(threaded_server()) and locust_running() and log.exists() and " message " in log.read_text(), 60)
        (victim,) = threaded_server()
        victim.kill()
        assert locust_running()  # Locust itself goes on, against a dead server
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        stop_sweep(proc)
    assert proc.returncode == 0, stderr
    manifest, cells = load_run(out)
    by_key = {(c.variant, c.users): c for c in cells}
    died = by_key[("threaded", 2)]
    assert died.status == "server-died" and died.server.died
    classes = {kind for by_class in died.failures_total.values() for kind in by_class}
    assert classes & {"ConnectRefused", "ResetByServer"}, died.failures_total  # what Locust met after the kill
    assert ("threaded", 3) not in by_key  # its variant ended; the sweep went on
    assert by_key[("selectors", 2)].status == "ok" and by_key[("selectors", 3)].status == "ok"
    assert "the server died" in stderr
    report = (out / "report.html").read_text()
    assert "died" in report
    assert_nothing_left(server_pids(cells))


def test_compare_flags_a_variant_slowed_on_purpose_and_checks_set_the_exit_code(start: Any, tmp_path: Path) -> None:
    """The same design, then slowed by 3 ms a reply (tests/slow_server.py: test-only slowness), both as --target."""
    before, after = tmp_path / "before", tmp_path / "after"
    fast = start("asyncio", backlog=128)
    slow = start("asyncio", backlog=128, entry=(str(Path(__file__).resolve().parent / "slow_server.py"),),
                 extra_args=["--delay-ms", "3"])  # fmt: skip
    common = ["--users", "2", *SHORT, "--quiet"]
    assert swarmbench("sweep", *common, "--no-report", "--target", f"127.0.0.1:{fast.port}", "--out", str(before)).returncode == 0
    slowed = swarmbench("sweep", *common, "--no-report", "--target", f"127.0.0.1:{slow.port}", "--out", str(after))
    assert slowed.returncode == 0, slowed.stderr
    assert not (before / "report.html").exists() and "report:" not in slowed.stdout  # --no-report: the files only
    result = swarmbench("compare", str(before), str(after), "--check", "ratio.message.p50<=1.5")
    assert result.returncode == 1
    broken = [line for line in result.stderr.splitlines() if line.startswith("check ")]
    assert len(broken) == 1 and "target u=2" in broken[0] and "ratio.message.p50" in broken[0]
    assert "target" in result.stdout and (after / "compare.html").exists()
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


def test_a_broken_check_and_a_failed_cell_exit_1(tmp_path: Path) -> None:
    ok = swarmbench("sweep", "--quiet", "--no-report", "--variants", "asyncio", "--users", "1", "--duration", "1s", "--warmup", "0s",
                    "--out", str(tmp_path / "ok"), "--check", "throughput>=1e12")
    assert ok.returncode == 1, ok.stderr
    assert [line for line in ok.stderr.splitlines() if line.startswith("check ")], ok.stderr
    broken = tmp_path / "broken.py"
    broken.write_text('raise RuntimeError("this scenario is broken on purpose")\n')
    failed = swarmbench("sweep", "--quiet", "--no-report", "--variants", "asyncio", "--users", "1", "--duration", "1s", "--warmup",
                        "0s", "--scenario", str(broken), "--out", str(tmp_path / "failed"))
    assert failed.returncode == 1, failed.stderr
    assert "cell asyncio u=1 failed" in failed.stderr and "Traceback" not in failed.stderr
    _, (cell,) = load_run(tmp_path / "failed")
    assert cell.status == "failed"


def make_read_only(folder: Path) -> None:
    """No new file in ``folder``, for root too (chattr +i; chmod does not stop root)."""
    folder.chmod(0o555)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available")


def test_a_write_error_ends_the_sweep_in_one_line_and_keeps_the_finished_cells(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_sweep("--variants", "threaded", "--users", "1,2,3", "--duration", "1s", "--warmup", "0s", "--out", str(out))
    try:
        assert wait_for(lambda: (out / "cell-threaded-u00001.json").exists(), 60), "no cell finished"
        first = (out / "cell-threaded-u00001.json").read_bytes()
        make_read_only(out)  # raw/ stays writable: Locust runs; the next cell's result cannot be written
        _, stderr = proc.communicate(timeout=120)
    finally:
        stop_sweep(proc)
        subprocess.run(["chattr", "-i", str(out)], capture_output=True)
        out.chmod(0o755)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    error = [line for line in stderr.splitlines() if line.startswith("swarmbench: error:")]
    assert len(error) == 1 and "cannot write" in error[0] and "cell-threaded-u00002.json" in error[0], stderr
    assert (out / "cell-threaded-u00001.json").read_bytes() == first
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["cell-threaded-u00001.json", "run.json"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / "raw" / "cell-threaded-u00003.locust.log").exists()  # the sweep stopped there


def test_two_sweeps_with_local_workers_run_at_once_on_loopback_masters(tmp_path: Path) -> None:
    args = ("--variants", "asyncio", "--users", "2", "--duration", "2s", "--warmup", "1s", "--workers", "1", "--no-report")
    procs = [start_sweep(*args, "--out", str(tmp_path / name)) for name in ("a", "b")]
    try:
        results = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            stop_sweep(p)
    assert [p.returncode for p in procs] == [0, 0], results
    ports = set()
    for name in ("a", "b"):
        _, (cell,) = load_run(tmp_path / name)
        assert cell.status == "ok" and cell.messages > 0, cell.error
        (locust,) = [c for c in cell.commands if "--headless" in c]  # the Locust command (harness.locust_main)
        assert locust[locust.index("--master-bind-host") + 1] == "127.0.0.1"
        port = locust[locust.index("--master-bind-port") + 1]
        assert locust[locust.index("--master-port") + 1] == port
        ports.add(port)
    assert len(ports) == 2
