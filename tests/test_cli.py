"""``swarmbench`` arguments: every bad one refused before any work, in one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from helpers import one_error_line

from harness.arguments import UsageError, locust_args_ok, make_out_dir, server_args_ok, user_counts, variant_names
from harness.cli import main


@pytest.mark.parametrize(
    "arg",
    ["-u5", "-u", "--users=5", "--use=5", "--users", "-t1s", "--run-time=1s", "-r1", "--spawn-rate=1", "-f",
     "-f other.py", "--locustfile=other.py", "--host=tcp://127.0.0.1:1", "-Htcp://127.0.0.1:1", "--headless",
     "--hdr-file=/tmp/x", "--processes=2", "--processes", "--master", "--master-bind-host=0.0.0.0",
     "--master-bind-port=1", "--master-b=1", "--master-host=127.0.0.1", "--master-port=1", "--worker",
     "--expect-workers=2", "--json-file=x", "--json", "--config=other.conf", "--rate=5", "--autostart"],
)  # fmt: skip
def test_every_option_the_sweep_owns_is_refused_in_any_spelling(arg: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert "sets this itself" in refused_before_any_work(capsys, tmp_path, f"--locust-arg={arg}", arg)


def refused_before_any_work(capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, arg: str) -> str:
    out = tmp_path / "r"
    line = one_error_line(capsys, ["sweep", option, "--out", str(out)])
    assert arg in line and not out.exists()
    return line


@pytest.mark.parametrize("arg", ["--messages-per-session=1000", "--think-time=1", "--loglevel=INFO", "-L", "INFO",
                                 "ChatUser", "--message-size=64", "-1"])
def test_scenario_and_locust_options_the_sweep_does_not_own_pass(arg: str, tmp_path: Path) -> None:
    """Accepted, and they reach Locust's command line as given, after the sweep's own."""
    from harness.locust_run import LocustJob

    locust_args_ok([arg])  # raises UsageError when refused
    job = LocustJob(Path("chat.py"), "tcp://127.0.0.1:1", 2, 1.0, 3.0, tmp_path / "h", tmp_path / "l",
                    tmp_path / "j", extra_args=(arg,))  # fmt: skip
    assert job.argv()[-1] == arg


@pytest.mark.parametrize("arg", ["--host=0.0.0.0", "--host", "--ho=0.0.0.0", "--port=80", "--po=80", "--backlog=1",
                                 "--back=1"])
def test_server_options_that_would_defeat_the_sweep_are_refused(arg: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert "--server-arg" in refused_before_any_work(capsys, tmp_path, f"--server-arg={arg}", arg)


@pytest.mark.parametrize("arg", ["--delay-ms=3", "--log-level=WARNING", "--workers=4", "--processes=2", "--loop=uvloop"])
def test_server_options_of_a_variant_pass(arg: str) -> None:
    """Accepted, and they reach the server's command line after the sweep's own host, port and backlog."""
    from harness.server_process import server_command

    server_args_ok([arg])  # raises UsageError when refused
    argv = server_command("pool", extra_args=[arg])
    assert argv[-1] == arg and argv.index("--port") < argv.index(arg)


def dead_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


def test_a_mistyped_pid_is_refused_before_anything_else(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The target refuses too: the PID is checked first, so the line is about the PID, not the server.
    out = tmp_path / "r"
    line = one_error_line(capsys, ["sweep", "--target", "127.0.0.1:1", "--pid", str(dead_pid()), "--out", str(out)])
    assert "--pid" in line and "no such process" in line
    assert not out.exists()


def test_out_naming_an_existing_file_or_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "results"
    a_file.write_text("mine")
    line = one_error_line(capsys, ["sweep", "--out", str(a_file)])
    assert "exists already (a file)" in line and a_file.read_text() == "mine"
    full = tmp_path / "full"
    full.mkdir()
    (full / "run.json").write_text("{}")
    assert "not empty" in one_error_line(capsys, ["sweep", "--out", str(full)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "never overwritten" in one_error_line(capsys, ["sweep", "--out", str(empty)])
    assert "letters, digits" in one_error_line(capsys, ["sweep", "--out", str(tmp_path / "a b")])
    assert (full / "run.json").read_text() == "{}" and not any(empty.iterdir())


def test_default_results_folders_never_collide(tmp_path: Path) -> None:
    made = [make_out_dir(None, tmp_path / "swarmbench-results") for _ in range(3)]  # within one second, mostly
    assert len({p.name for p in made}) == 3 and all(p.is_dir() for p in made)
    with pytest.raises(UsageError, match="exists already"):
        make_out_dir(made[0], tmp_path)


def test_repeated_levels_and_variants_are_removed_in_order() -> None:
    assert user_counts("10,1,10,100,1") == (10, 1, 100)
    assert variant_names("pool,threaded,pool") == ("pool", "threaded")


@pytest.mark.parametrize(
    "argv",
    [["sweep", "--slo-ms", "0"], ["sweep", "--rate", "nan"], ["sweep", "--rate", "inf"], ["sweep", "--rate", "-1"],
     ["report", "x", "--slo-ms", "0"], ["compare", "a", "b", "--threshold", "1.5"],
     ["sweep", "--master-bind", "nohost"], ["sweep", "--master-bind", "127.0.0.1:99999"]],
)
def test_numbers_out_of_range_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The line names the argument that is wrong (and its value where there is one)."""
    line = one_error_line(capsys, argv)
    option = argv[-2]
    assert option in line and argv[-1] in line, line


def test_the_locust_master_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    from harness.cli import build_parser
    from harness.locust_run import LocustJob

    assert build_parser().parse_args(["sweep"]).master_bind == "127.0.0.1:5557"
    job = LocustJob(Path("chat.py"), "tcp://127.0.0.1:1", 2, 1.0, 3.0, tmp_path / "h", tmp_path / "l", tmp_path / "j",
                    expect_workers=2)
    argv = job.argv()
    assert argv[argv.index("--master-bind-host") + 1] == "127.0.0.1"


def test_version_prints_the_installed_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    assert main(["--version"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"swarmbench {metadata.version('swarmbench')}"
    assert not err
