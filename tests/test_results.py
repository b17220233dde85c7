"""Result files from anywhere: loaded into a model or refused in one line naming the file and the field.

And the one writer: atomic, never overwriting a result, no temporary file left
on a write error (a read-only folder, a file too large to write).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.results import CellResult, Latency, ResultError, RunManifest, load_run, replace_manifest, write_cell
from harness.results import store
from harness.results.histogram_file import hgrm_path, load_histogram_file
from harness.results.store import write_bytes, write_new

T0 = 1_700_000_000.0


def good_cell(**changes: Any) -> dict[str, Any]:
    cell = CellResult("threaded", 10, "chat", "ok", T0, T0 + 10, 2.0, 8.0, throughput=100.0, messages=800,
                      latency={"message": Latency(800, 10, 900, 50, 40, 60, 70, 90, 95, 99)}, run_id="run-1",
                      files={"histograms": "raw/cell-threaded-u00010.hdr.json"})
    return {**cell.to_dict(), **changes}


def write_raw(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def assert_one_line_error(folder: Path, *needles: str) -> str:
    with pytest.raises(ResultError) as info:
        load_run(folder)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"variant": "z/../../../../../tmp/x"}, "variant"),
        ({"variant": ".."}, "variant"),
        ({"run_id": "../x"}, "run_id"),
        ({"users": 1e400}, "users"),
        ({"users": 0}, "users"),
        ({"users": "5"}, "users"),
        ({"status": "bogus"}, "status"),
        ({"server": []}, "server"),
        ({"server": {"threads_max": "many"}}, "server.threads_max"),
        ({"latency": {"message": 5}}, "latency.message"),
        ({"latency": {"message": {"count": 3, "p99_us": "abc"}}}, "latency.message.p99_us"),
        ({"latency": {"message": {"count": 3, "p99_us": None}}}, "latency.message"),
        ({"throughput": float("nan")}, "throughput"),
        ({"started_at": None}, "started_at"),
        ({"generator": {"saturated": "no"}}, "generator.saturated"),
        ({"timeline": [{"t": 0, "threads": -1}]}, "timeline[0].threads"),
        ({"failures": {"message": {"TimeoutError": -3}}}, "failures.message.TimeoutError"),
        ({"files": {"histograms": "../../etc/passwd"}}, "files.histograms"),
        ({"commands": [["locust", 5]]}, "commands[0][1]"),
        ({"notes": "died"}, "notes"),
    ],
)
def test_a_bad_field_is_one_line_naming_the_file_and_the_field(tmp_path: Path, changes: dict[str, Any],
                                                                 field: str) -> None:
    write_raw(tmp_path / "r", "cell-x-u00001.json", json.dumps(good_cell(**changes)).encode())
    assert_one_line_error(tmp_path / "r", "cell-x-u00001.json", field)


@pytest.mark.parametrize(
    "data",
    [b"\xff{}", b"[" * 100_000 + b"]" * 100_000, b'{"users": 1' + b"0" * 5000 + b"}", b"", b"null", b"{" + b"\x00"],
    ids=["0xff", "nested", "long-number", "empty", "null", "nul"],
)
def test_bytes_that_are_not_a_result_are_one_line(tmp_path: Path, data: bytes) -> None:
    write_raw(tmp_path / "r", "cell-x-u00001.json", data)
    assert_one_line_error(tmp_path / "r", "cell-x-u00001.json")
    write_raw(tmp_path / "m", "run.json", data)
    assert_one_line_error(tmp_path / "m", "run.json")
    path = write_raw(tmp_path / "h", "x.hdr.json", data)
    with pytest.raises(ResultError, match="x.hdr.json"):
        load_histogram_file(path)


def test_a_bad_manifest_names_its_field(tmp_path: Path) -> None:
    manifest = RunManifest("run-1", T0, planned=(("threaded", 1),)).to_dict()
    for changes, field in (({"run_id": "a/b"}, "run_id"), ({"planned": [["../x", 1]]}, "planned[0]"),
                           ({"outcome": "done"}, "outcome"), ({"argv": "sweep"}, "argv")):
        folder = tmp_path / field.replace("[", "_").replace("]", "")
        write_raw(folder, "run.json", json.dumps({**manifest, **changes}).encode())
        assert_one_line_error(folder, "run.json", field)


def test_a_good_cell_round_trips_and_old_files_without_notes_still_load(tmp_path: Path) -> None:
    data = good_cell()
    del data["notes"]
    write_raw(tmp_path / "r", "cell-threaded-u00010.json", json.dumps(data).encode())
    _, (cell,) = load_run(tmp_path / "r")
    assert cell.notes == () and cell.latency["message"].p99_us == 90
    assert CellResult.from_dict(json.loads(json.dumps(cell.to_dict()))) == cell


# -- any bytes, any JSON ------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
CELL_KEYS = sorted(good_cell())
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def loads_or_one_error(folder: Path, name: str, data: bytes) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    write_raw(folder, name, data)
    try:
        load_run(folder)
    except ResultError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_as_a_cell_or_manifest_load_or_give_one_result_error(tmp_path: Path, data: bytes) -> None:
    loads_or_one_error(tmp_path / "c", "cell-x-u00001.json", data)
    loads_or_one_error(tmp_path / "m", "run.json", data)


@FUZZ
@given(key=st.sampled_from(CELL_KEYS), value=JSON)
def test_any_json_in_any_cell_field_loads_or_gives_one_result_error(tmp_path: Path, key: str, value: Any) -> None:
    loads_or_one_error(tmp_path / "c", "cell-x-u00001.json", json.dumps(good_cell(**{key: value})).encode())


@FUZZ
@given(key=st.sampled_from(sorted(RunManifest("r", T0).to_dict())), value=JSON)
def test_any_json_in_any_manifest_field_loads_or_gives_one_result_error(tmp_path: Path, key: str, value: Any) -> None:
    data = {**RunManifest("r", T0).to_dict(), key: value}
    loads_or_one_error(tmp_path / "m", "run.json", json.dumps(data).encode())


def good_histogram_file() -> dict[str, Any]:
    return {"schema_version": 1, "kind": "swarmbench.histograms", "started_at": T0, "ended_at": T0 + 3,
            "options": {"users": 2, "rate": 0.0}, "generator": {}, "names": {"message": {"count": 0}},
            "failures": {}, "intervals": [{"t": int(T0), "histograms": {}, "failures": {}}]}


@FUZZ
@given(key=st.sampled_from(sorted(good_histogram_file())), value=JSON, data=st.binary(max_size=200))
def test_any_histogram_file_loads_or_gives_one_result_error(tmp_path: Path, key: str, value: Any, data: bytes) -> None:
    for raw in (json.dumps({**good_histogram_file(), key: value}).encode(), data):
        path = write_raw(tmp_path, "x.hdr.json", raw)
        try:
            load_histogram_file(path)
        except ResultError as exc:
            assert "\n" not in str(exc)


@given(name=st.text(max_size=80))
def test_a_request_name_never_leaves_the_histogram_folder(name: str) -> None:
    base = Path("/results/raw/cell.hdr.json")
    path = hgrm_path(base, name)
    assert path.parent == base.parent and path.name.startswith("cell.hdr.") and ".." not in path.name[9:]
    assert "/" not in path.name and path.name.endswith(".hgrm")
    if name != "message":
        assert hgrm_path(base, name) != hgrm_path(base, "message")


# -- the writer ---------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_writing_a_cell_twice_raises_and_leaves_the_first_intact(tmp_path: Path) -> None:
    first = CellResult.from_dict(good_cell())
    path = write_cell(tmp_path, first)
    before = path.read_bytes()
    with pytest.raises(ResultError, match="never overwritten"):
        write_cell(tmp_path, CellResult.from_dict(good_cell(messages=1)))
    with pytest.raises(ResultError, match="never overwritten"):
        write_new(path, {"other": 1})
    assert path.read_bytes() == before and not leftovers(tmp_path)


def test_without_hard_links_an_exclusive_write_still_refuses_to_overwrite(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(store.os, "link", no_links)
    path = write_new(tmp_path / "a.json", {"n": 1})
    with pytest.raises(ResultError, match="never overwritten"):
        write_new(path, {"n": 2})
    assert json.loads(path.read_text()) == {"n": 1} and not leftovers(tmp_path)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder no file can be created in, for root too (chattr +i) where chmod is not enough."""
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "run.json").write_text('{"old": true}')
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        folder.chmod(0o755)
        pytest.skip("running as root and chattr +i is not available: no way to make a folder read-only")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.mark.slow  # chattr, a process, when run as root
def test_a_read_only_folder_is_one_result_error_and_no_temporary_file(read_only: Path) -> None:
    for write in (lambda: write_new(read_only / "cell.json", {"n": 1}),
                  lambda: replace_manifest(read_only, RunManifest("r", T0))):
        with pytest.raises(ResultError, match="cannot write") as info:
            write()
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in read_only.iterdir()) == ["run.json"]
    assert (read_only / "run.json").read_text() == '{"old": true}'


def test_a_full_disk_is_one_result_error_and_no_temporary_file(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes a large write fail (EFBIG) as a full disk would (ENOSPC), for any user."""
    (tmp_path / "run.json").write_text('{"old": true}')
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(ResultError, match="cannot write"):
            write_bytes(tmp_path / "run.json", b"x" * 100_000)
        with pytest.raises(ResultError, match="cannot write"):
            write_new(tmp_path / "cell.json", {"x": "y" * 100_000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    assert (tmp_path / "run.json").read_text() == '{"old": true}'
