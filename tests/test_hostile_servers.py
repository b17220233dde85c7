"""Hostile servers on 127.0.0.1 under Locust (issue 22, items 1, 3 and 9): the generator stays bounded.

Each server is a small one of the test's own; each Locust run is a child process
(Locust and gevent never load in the pytest process), bounded in time by ``STOP_BOUND_S``.
"""

from __future__ import annotations

import os
import random
import re
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, ThreadingServer, kill_group, locust_argv

from harness.failures import SAMPLES_PER_CLASS

pytestmark = pytest.mark.slow  # every test here starts processes

PING = b"*1\r\n$4\r\nPING\r\n"
QUIT = b"*1\r\n$4\r\nQUIT\r\n"
#: Past any run here: a run still going then did not stop (the old parser was killed at 100 s).
STOP_BOUND_S = 30
USER_FILE = """
import socket

from locust import task

import harness.target as target
from harness.user import TcpUser


def resolve(host, port):  # dual.test is ::1 then 127.0.0.1, whatever /etc/hosts says
    if host != "dual.test":
        raise socket.gaierror(socket.EAI_NONAME, "only dual.test in this test")
    return [(socket.AF_INET6, ("::1", port, 0, 0)), (socket.AF_INET, ("127.0.0.1", port))]


target.resolve = resolve


class HostileUser(TcpUser):
    reply_timeout = 1.0

    @task
    def chat(self):
        self.connect()
        if self.send_messages():
            self.quit()
"""


class _Commands(socketserver.BaseRequestHandler):
    """Reads RESP commands of the client's (PING or QUIT, 14 bytes each) and answers each with ``answer``."""

    def handle(self) -> None:
        buf, stop = b"", self.server.stop  # type: ignore[attr-defined]
        try:
            while not stop.is_set() and (data := self.request.recv(65536)):
                buf += data
                while len(buf) >= len(PING):
                    command, buf = buf[: len(PING)], buf[len(PING) :]
                    if command == QUIT:
                        self.request.sendall(b"+OK\r\n")
                        return
                    self.answer(stop)
        except OSError:
            pass

    def answer(self, stop: threading.Event) -> None:
        raise NotImplementedError


class _EndlessArray(_Commands):
    """``*250000`` then ``:1`` every 0.2 ms (five a millisecond): the reply would end only after 50 s."""

    def answer(self, stop: threading.Event) -> None:
        self.request.sendall(b"*250000\r\n")
        for _ in range(249_995 // 5):  # bounded, and never the whole reply
            if stop.wait(0.001):
                return
            self.request.sendall(b":1\r\n" * 5)


class _RandomErrors(_Commands):
    """``-ERR <random>``: a server that chooses a new failure text for every reply."""

    def answer(self, stop: threading.Event) -> None:
        self.request.sendall(b"-ERR %x\r\n" % random.getrandbits(64))


class _BigBulk(_Commands):
    """A valid 2 MB bulk string to every command."""

    def answer(self, stop: threading.Event) -> None:
        self.request.sendall(b"$2000000\r\n" + b"v" * 2_000_000 + b"\r\n")


@pytest.fixture
def hostile() -> Iterator[Any]:
    """``hostile(Handler)`` -> a port on 127.0.0.1; every server and handler is stopped at teardown."""
    servers: list[ThreadingServer] = []

    def _serve(handler: type[socketserver.BaseRequestHandler]) -> int:
        server = ThreadingServer(("127.0.0.1", 0), handler)
        server.stop = threading.Event()  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield _serve
    for server in servers:
        server.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def run_bounded(tmp: Path, host: str, *args: str, seconds: int = 3) -> tuple[int | None, str, Any]:
    """Locust with HostileUser for ``seconds``: (exit code, None if it had to be killed; output; histogram file)."""
    from harness.results.histogram_file import load_histogram_file

    locustfile = tmp / "hostile_user.py"
    locustfile.write_text(USER_FILE)
    hdr = tmp / "hdr.json"
    argv = locust_argv(locustfile, "--headless", "-u", "2", "-r", "100", "-t", f"{seconds}s", "--host", host,
                       "--hdr-file", str(hdr), "--only-summary", *args)  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=seconds + STOP_BOUND_S)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code, output = None, ""
    finally:
        kill_group(proc)
    return code, output, load_histogram_file(hdr) if hdr.exists() else None


def error_report(output: str, start: str) -> list[str]:
    """The rows of Locust's closing error report whose error starts with ``start`` (one per distinct text)."""
    rows = [line.split(None, 1) for line in output.partition("Error report")[2].splitlines()]
    return [row[1].strip() for row in rows if len(row) == 2 and row[0].isdigit() and row[1].startswith(start)]


def test_an_endless_array_ends_in_a_reply_timeout_and_the_run_stops(hostile: Any, tmp_path: Path) -> None:
    """``*250000`` then ``:1`` every 0.2 ms kept the generator busy for good: -t did not stop it, no timeout fired."""
    port = hostile(_EndlessArray)
    code, output, data = run_bounded(tmp_path, f"127.0.0.1:{port}", "--protocol", "redis")
    assert code is not None, f"the run did not stop within -t + {STOP_BOUND_S} s"
    assert code == 1 and data is not None, output[-3000:]
    assert data.failures["message"].get("ReplyTimeout", 0) >= 2, data.failures  # each user's, at 1 s each
    assert "message" not in data.names  # nothing answered it


def test_random_error_texts_make_a_bounded_number_of_failure_rows(hostile: Any, tmp_path: Path) -> None:
    """A server answering ``-ERR <random>`` made a failure row per reply (30,000 rows, 102 MB in 10 s)."""
    port = hostile(_RandomErrors)
    code, output, data = run_bounded(tmp_path, f"127.0.0.1:{port}", "--protocol", "redis", seconds=4)
    assert code == 1 and data is not None, output[-3000:]
    errors = data.failures["message"]["ServerError"]
    assert errors > 10 * (SAMPLES_PER_CLASS + 1), errors  # enough distinct texts to flood the table before
    rows = error_report(output, "tcp message: ServerError")
    assert len(rows) == SAMPLES_PER_CLASS + 1, rows  # the first distinct texts, then the class's own
    assert sum(bool(re.search(r"'ERR [0-9a-f]+'", row)) for row in rows) == SAMPLES_PER_CLASS


@pytest.mark.parametrize("limit", [None, 1_000_000])
def test_a_2_mb_bulk_reply_is_read_or_refused_as_too_large(hostile: Any, tmp_path: Path, limit: int | None) -> None:
    """A valid 2 MB reply was refused as "no whole redis reply in N bytes": one limit now, an option, its name in the text."""
    port = hostile(_BigBulk)
    args = ("--max-reply-bytes", str(limit)) if limit else ()
    code, output, data = run_bounded(tmp_path, f"127.0.0.1:{port}", "--protocol", "redis", *args, seconds=4)
    assert data is not None, output[-3000:]
    if limit is None:
        assert code == 0 and data.failures == {}, (data.failures, output[-3000:])
        assert data.names["message"].count > 0
    else:
        assert code == 1 and set(data.failures["message"]) == {"ReplyTooLarge"}, data.failures
        assert error_report(output, "tcp message: ReplyTooLarge('reply larger than --max-reply-bytes 1000000')"), output


def test_users_connect_where_the_name_has_a_server(start: Any, tmp_path: Path) -> None:
    """dual.test is ::1 then 127.0.0.1, the server on 127.0.0.1 only: the probe passed, users got ConnectRefused."""
    server = start("threaded", backlog=64)
    code, output, data = run_bounded(tmp_path, f"dual.test:{server.port}", seconds=4)
    assert code == 0 and data is not None, output[-3000:]
    assert data.failures == {}, data.failures  # the refused ::1 gave way to 127.0.0.1, unreported
    assert data.names["message"].count > 0 and data.names["connect"].count > 0


@pytest.fixture
def accepts_once() -> Iterator[int]:
    """A port that accepts one connection (the sweep's probe) and then nothing: the users are refused."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.close()
        except OSError:
            pass
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(10)


def test_a_cell_where_no_user_connected_is_failed_not_ok(accepts_once: int, tmp_path: Path) -> None:
    """It was ``ok 0 msg/s`` with only ConnectRefused, exit 0."""
    from harness.results import load_run

    out = tmp_path / "run"
    # --pid: a live process stands for the server, so the listener gone after the probe is no server death
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(150)"], start_new_session=True)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "harness", "sweep", "--target", f"127.0.0.1:{accepts_once}", "--pid",
             str(stand_in.pid), "--users", "1", "--duration", "1s", "--warmup", "0s", "--establish-timeout", "2s",
             "--quiet", "--no-report", "--out", str(out)],
            capture_output=True, text=True, timeout=150, cwd=ROOT,
        )  # fmt: skip
    finally:
        kill_group(stand_in)
    assert result.returncode != 0, result.stdout + result.stderr
    _, cells = load_run(out)
    assert [c.status for c in cells] == ["failed"], [(c.status, c.error) for c in cells]
    assert "no user ever connected" in (cells[0].error or "") and "ConnectRefused" in (cells[0].error or "")


def test_resp_bench_prints_its_ratios() -> None:
    """bench/bench_resp.py shows linearity as ratios (figures are not asserted: no wall-clock test)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_resp.py"), "--items", "2000", "--repeat", "1"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(linear: about 1)" in result.stdout and "(resumed: about 1)" in result.stdout
    assert "a compare with the known reply" in result.stdout
