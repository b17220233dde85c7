"""Issue 22, the sweep's side: options checked before any cell, results that load back, TLS probed, workers bounded.

Everything on 127.0.0.1; Locust runs only in child processes (``swarmbench``, ``locust``), never here.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable

import psutil
import pytest
import trustme
from helpers import free_port, kill_group, serving, wait_until

from harness.cli import main
from harness.results import CellResult, ResultError, RunManifest, load_run, replace_manifest, write_cell
from harness.results.fields import MAX_ARGUMENT
from harness.server_process import RunningServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = ["--users", "1", "--duration", "1s", "--warmup", "0s", "--establish-timeout", "5s", "--quiet"]


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> str:
    """The one line a sweep is refused with; nothing was made. ``--target`` a closed port: old code fails fast."""
    out = tmp_path / "out"
    line = one_error_line(capsys, ["sweep", "--target", f"127.0.0.1:{free_port()}", *args, "--out", str(out)])
    assert not out.exists()
    return line


# -- item 6: --quit-message before any cell ---------------------------------------------------------------------


def test_a_quit_message_for_another_profile_is_refused_before_any_cell(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = refused(capsys, tmp_path, "--quit-message", "bye")
    assert "--quit-message is the line profile's" in line, line


def test_a_quit_message_of_two_lines_is_refused_naming_itself(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = refused(capsys, tmp_path, "--protocol", "line", "--quit-message", "bye\nnow")
    assert line.startswith("swarmbench: error: --quit-message:") and "one line" in line and "--message" not in line.replace("--quit-message", ""), line


# -- item 7: what the writer writes, the loader reads; a report not written is an error ---------------------


def test_the_longest_argument_loads_back_and_a_longer_one_is_never_written(tmp_path: Path) -> None:
    longest = "x" * MAX_ARGUMENT
    replace_manifest(tmp_path, RunManifest("r", 1.0, argv=("sweep", f"--message={longest[10:]}")))
    cell = CellResult("threaded", 1, "chat", "failed", 1.0, 2.0, 0.0, 1.0, error="e", run_id="r",
                      commands=(("python", "-m", "harness.locust_main", longest),))  # fmt: skip
    write_cell(tmp_path, cell)
    manifest, (loaded,) = load_run(tmp_path)
    assert manifest is not None and len(manifest.argv[1]) == MAX_ARGUMENT and loaded.commands[0][3] == longest
    with pytest.raises(ResultError, match="could not read it back"):
        replace_manifest(tmp_path, RunManifest("r", 1.0, argv=(longest + "x",)))
    assert load_run(tmp_path)[0] == manifest  # the readable manifest stays


def test_a_message_longer_than_one_argument_is_refused_up_front(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = refused(capsys, tmp_path, "--protocol", "line", "--message", "x" * (MAX_ARGUMENT - len("--message=") + 1))
    assert line.startswith("swarmbench: error: --message:") and f"at most {MAX_ARGUMENT:,}" in line, line


def test_a_report_that_was_not_written_fails_the_sweep(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import harness.cli
    import reports.build
    from harness.sweep import SweepOutcome

    def no_report(*_args: object, **_kw: object) -> Path:
        raise ResultError("run.json: field 'argv[17]': expected a string")

    monkeypatch.setattr(harness.cli, "run_sweep", lambda cfg, _progress: SweepOutcome(RunManifest("r", 1.0)))
    monkeypatch.setattr(reports.build, "build_report", no_report)
    line = one_error_line(capsys, ["sweep", "--variants", "asyncio", *TINY, "--out", str(tmp_path / "out")], code=1)
    assert "the report was not written" in line, line


class LineEcho(socketserver.StreamRequestHandler):
    """A line server: one reply line per line received."""

    def handle(self) -> None:
        for _ in self.rfile:
            self.wfile.write(b"ok\n")


@pytest.mark.slow
def test_a_message_of_120000_characters_gives_a_readable_run_and_its_report(tmp_path: Path) -> None:
    message = "m" * 120_000
    out = tmp_path / "out"
    with serving(LineEcho) as port:
        result = subprocess.run([sys.executable, "-m", "harness", "sweep", "--target", f"127.0.0.1:{port}", "--protocol", "line",
                                 "--message", message, "--rate", "20", *TINY, "--out", str(out)],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").is_file()
    manifest, (cell,) = load_run(out)
    assert manifest is not None and message in manifest.argv and cell.status == "ok" and cell.messages > 0


# -- item 8 and minors: TLS for started variants, files that are no files ----------------------------------------


def test_tls_on_started_variants_without_a_certificate_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = one_error_line(capsys, ["sweep", "--variants", "asyncio", "--tls", "--tls-insecure", *TINY, "--out", str(out)])
    assert "--tls-cert" in line and not out.exists(), line


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(CA file, certificate chain, key) for 127.0.0.1, made by trustme now."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    leaf.private_key_pem.write_to_path(str(paths[2]))
    paths[1].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return paths


def test_a_fifo_or_folder_as_the_servers_certificate_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                 certificate: tuple[Path, Path, Path]) -> None:
    ca, chain, key = certificate
    fifo = tmp_path / "cert.fifo"
    os.mkfifo(fifo)
    common = ["sweep", "--variants", "asyncio", *TINY, "--tls", "--tls-ca", str(ca), "--out", str(tmp_path / "out")]
    for cert, needle in ((fifo, "a FIFO (named pipe)"), (tmp_path, "a directory, not a regular file")):
        line = one_error_line(capsys, [*common, f"--server-arg=--tls-cert={cert}", f"--server-arg=--tls-key={key}"])
        assert f"--tls-cert {cert}: {needle}" in line, line
    line = one_error_line(capsys, ["sweep", "--variants", "asyncio", *TINY, "--server-arg=--tls-cert", f"--server-arg={chain}",
                                   f"--server-arg=--tls-key={key}", "--out", str(tmp_path / "out")])  # fmt: skip
    assert "add --tls" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("ca", "needle"), [("folder", "a directory, not a regular file"), ("/dev/null", "a character device")])
def test_a_ca_that_is_no_file_says_what_it_is(capsys: pytest.CaptureFixture[str], tmp_path: Path, ca: str, needle: str) -> None:
    path = str(tmp_path) if ca == "folder" else ca
    line = refused(capsys, tmp_path, "--tls", "--tls-ca", path)
    assert f"--tls-ca {path}: {needle}" in line, line


def swarmbench(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``swarmbench ARGS`` as a user runs it (the installed script), in ``cwd``."""
    return subprocess.run([str(BIN / "swarmbench"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_started_variants_are_probed_with_tls_before_their_cells(tmp_path: Path, certificate: tuple[Path, Path, Path]) -> None:
    ca, chain, key = certificate
    served = [f"--server-arg=--tls-cert={chain}", f"--server-arg=--tls-key={key}", "--variants", "asyncio", *TINY, "--tls",
              "--no-report"]
    unverified = swarmbench("sweep", *served, "--out", str(tmp_path / "no-ca"))  # the system's CAs do not know trustme's
    assert unverified.returncode == 1, unverified.stderr
    _, (cell,) = load_run(tmp_path / "no-ca")
    assert cell.status == "failed" and "TLS certificate not accepted" in (cell.error or ""), cell.error
    verified = swarmbench("sweep", *served, "--tls-ca", str(ca), "--out", str(tmp_path / "ca"))
    assert verified.returncode == 0, verified.stderr
    _, (cell,) = load_run(tmp_path / "ca")
    assert cell.status == "ok" and cell.messages > 0, cell.error


# -- minors: the worker's master address and a silent master; the spectrum's legend -----------------------------


def test_a_worker_takes_the_master_in_zmq_form() -> None:
    from harness.worker import master_address

    assert master_address("tcp://127.0.0.1:5557") == ("127.0.0.1", 5557)
    assert master_address("tcp://127.0.0.1") == ("127.0.0.1", 5557)
    with pytest.raises(ValueError, match="tcp://HOST"):
        master_address("http://127.0.0.1:5557")


def test_a_report_of_a_cell_without_data_warns_nothing(tmp_path: Path) -> None:
    from reports import build_report

    write_cell(tmp_path, CellResult("asyncio", 1, "chat", "failed", 1.0, 2.0, 0.0, 1.0, error="no data", run_id="r"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_report(tmp_path)
    assert not [w for w in caught if "legend" in str(w.message)], [str(w.message) for w in caught]


def established(server: RunningServer) -> int:
    return sum(c.status == psutil.CONN_ESTABLISHED for c in psutil.Process(server.pid).net_connections("tcp"))


def listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.Process(proc.pid).net_connections("tcp"))


@pytest.mark.slow
def test_a_stopped_master_does_not_keep_its_workers_loading(start: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = start("asyncio")
    port = str(free_port())
    master = subprocess.Popen(
        [str(BIN / "locust"), "-f", str(ROOT / "scenarios" / "chat.py"), "--master", "--expect-workers", "1",
         "--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--headless", "-u", "2", "-r", "2", "-t", "120s",
         "--host", server.url, "--think-time", "0.1", "--messages-per-session", "100000", "--loglevel", "WARNING"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    worker: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: listening(master, int(port)), 60, "the Locust master to listen")
        worker = subprocess.Popen([str(BIN / "swarmbench"), "worker", "--master", f"tcp://127.0.0.1:{port}", "--master-timeout", "5s"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        wait_until(lambda: established(server) == 2, 60, "the worker's two users to hold their connections")
        os.killpg(master.pid, signal.SIGSTOP)  # Locust's own limit on a silent master is 60 s
        wait_until(lambda: established(server) == 0, 25, "the worker to stop loading for a silent master")
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0 and "cell 1 done" in out, (out, err)
    finally:
        for proc in (worker, master):
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            kill_group(proc)


# -- any working directory --------------------------------------------------------------------------------------


@pytest.fixture
def hostile_cwd(tmp_path: Path) -> Path:
    """A user's project whose packages have Swarmbench's names; importing any of them fails."""
    project = tmp_path / "project"
    for name in ("server", "harness", "reports", "scenarios"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"raise ImportError('the project\\'s own {name} package')\n")
    return project


OWN_SCENARIO = '''
from locust import task

from harness.user import TcpUser


class OwnUser(TcpUser):
    @task
    def chat(self) -> None:
        self.connect()
        if self.send_messages():
            self.quit()
'''


@pytest.mark.slow
def test_a_sweep_runs_in_a_project_with_packages_of_the_same_names(hostile_cwd: Path) -> None:
    """The project's own locustfile, beside its packages: nothing in the scenario guards the names."""
    (hostile_cwd / "loadtest.py").write_text(OWN_SCENARIO)
    result = swarmbench("sweep", "--variants", "asyncio", "--scenario", "loadtest.py", *TINY, "--out", "results", cwd=hostile_cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    _, (cell,) = load_run(hostile_cwd / "results")
    assert cell.status == "ok" and cell.messages > 0, cell.error


@pytest.mark.slow
def test_locust_runs_a_shipped_scenario_in_a_project_with_packages_of_the_same_names(
    start: Callable[..., RunningServer], hostile_cwd: Path
) -> None:
    server = start("asyncio")
    proc = subprocess.Popen(
        [str(BIN / "locust"), "-f", str(ROOT / "scenarios" / "chat.py"), "--headless", "-u", "2", "-r", "2", "-t", "2s",
         "--host", server.url, "--json-file", "stats", "--only-summary"],
        cwd=hostile_cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 0 and "ImportError" not in output, output
    stats = {e["name"]: e for e in json.loads((hostile_cwd / "stats.json").read_text())}
    assert stats["message"]["num_requests"] > 0 and stats["message"]["num_failures"] == 0, output
