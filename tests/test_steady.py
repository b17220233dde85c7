"""Establish, then measure: the window waits for every user, the stop loses nothing, old files still load.

Real Locust runs against real sockets on 127.0.0.1; the slow server here is a
few lines of threads in the test process, stopped in a ``finally``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import run_locust

from harness.results import load_run
from harness.results.format import CELL_KIND
from server.protocol import MAX_MESSAGE, QUIT, REPLY


# -- pure ------------------------------------------------------------------------------------


@pytest.mark.forked
def test_pacer_keeps_its_phase_across_a_reconnect() -> None:
    """After a slow connect the next slot is on the user's own grid, not 'now' (no lockstep)."""
    from harness.user.pacing import Pacer

    pacer = Pacer(per_user_rate=100.0)  # a slot every 10 ms
    first = pacer.next_ns
    now = first + 3_000_000_000 + 4_321_000  # 3 s and a bit later, mid-slot
    pacer.resume(now)
    assert pacer.next_ns >= now
    assert pacer.next_ns - now < pacer.interval_ns
    assert (pacer.next_ns - first) % pacer.interval_ns == 0  # same phase as before the connect
    ahead = pacer.next_ns
    pacer.resume(now)  # not behind: unchanged
    assert pacer.next_ns == ahead


V1_CELL: dict[str, Any] = {
    "schema_version": 1, "kind": CELL_KIND, "variant": "threaded", "users": 10, "scenario": "chat",
    "status": "ok", "started_at": 1000.0, "ended_at": 1010.0, "warmup_s": 3.0, "duration_s": 4.0,
    "throughput": 100.0, "messages": 300, "rate": None, "workers": 0,
    "latency": {
        "message": {"count": 300, "p50_us": 100, "p99_us": 900, "min_us": 50, "max_us": 2000, "mean_us": 150.0, "p90_us": 500, "p95_us": 700, "p999_us": 1500, "p9999_us": 2000},
        "connect": {"count": 0},  # v1: the steady window only
        "connect_all": {"count": 10, "p50_us": 80, "p99_us": 1200, "min_us": 50, "max_us": 1200, "mean_us": 300.0,
                        "p90_us": 1000, "p95_us": 1100, "p999_us": 1200, "p9999_us": 1200},  # v1: the whole cell
    },
    "failures": {}, "failures_total": {"message": {"ReplyTimeout": 2}},
    "server": {"pid": 1, "threads_mean": 0.0, "threads_max": 0, "rss_bytes_max": 0, "samples": 0},
    "kernel": {"ListenOverflows": 0},
    "generator": {"cpu_percent_max": 10.0}, "timeline": [{"t": 0.0, "messages_per_s": 10.0}],
}  # fmt: skip


def test_a_version_1_cell_still_loads(tmp_path: Path) -> None:
    (tmp_path / "cell-threaded-u00010.json").write_text(json.dumps(V1_CELL))
    _, cells = load_run(tmp_path)
    (cell,) = cells
    assert cell.latency["connect"].count == 10 and "connect_all" not in cell.latency  # connect: the whole cell
    assert cell.server.threads_max is None and cell.server.rss_bytes_max is None  # v1's 0 on no samples
    assert cell.window_s is None and cell.established_at is None and cell.users_not_established is None
    assert cell.machine is None and cell.spectrum == ()
    assert cell.errors == 2 and cell.errors_in_window == 0  # errors: the whole cell


# -- a server that accepts slowly --------------------------------------------------------------


class SlowAcceptServer:
    """Accepts one connection every ``pause`` seconds; answers each message with '-' until --quit--."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.conns: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopped.wait(self.pause):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(MAX_MESSAGE):
                if QUIT in data:
                    break
                conn.sendall(REPLY)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        for sock in [self.sock, *self.conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def slow_server() -> Iterator[SlowAcceptServer]:
    server = SlowAcceptServer(pause=0.5)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow
def test_the_window_waits_until_every_user_is_established(slow_server: SlowAcceptServer, tmp_path: Path) -> None:
    """Six users, one accepted every 0.5 s: the window starts after the last one's first reply."""
    result = run_locust(
        "chat.py", tmp_path, f"tcp://127.0.0.1:{slow_server.port}", "--messages-per-session", "1000",
        "--think-time", "0.05", "--establish-timeout", "20", "--swarmbench-settle", "0.5", "--swarmbench-window", "2",
        users=6, seconds=60,
    )  # fmt: skip
    hdr = result.hdr
    assert hdr is not None, result.output
    assert hdr.users_established == 6 and hdr.users_not_established == 0, result.output[-2000:]
    assert hdr.established_at is not None and hdr.measure_from is not None
    assert hdr.established_at - hdr.started_at >= 2.5  # six accepts, 0.5 s apart
    assert hdr.measure_from == pytest.approx(hdr.established_at + 0.5)
    # the plugin ended the run two whole seconds after the settle, long before Locust's -t
    assert hdr.stopping_at is not None and hdr.ended_at - hdr.started_at < 20
    assert int(hdr.stopping_at) - int(-(-hdr.measure_from // 1)) == 2
    window = hdr.window(int(-(-hdr.measure_from // 1)), int(hdr.stopping_at))
    assert window["message"].get_total_count() > 0


@pytest.mark.slow
def test_connects_pending_at_the_stop_are_recorded(tmp_path: Path) -> None:
    """A listener that never accepts: beyond its queue, connects wait in SYN retries when the run stops."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        result = run_locust("chat.py", tmp_path, f"tcp://127.0.0.1:{port}", users=8, seconds=3)
    finally:
        listener.close()
    hdr = result.hdr
    assert hdr is not None, result.output
    pending = hdr.names.get("connect_pending")
    assert pending is not None and pending.count >= 4, (hdr.names.keys(), result.output[-2000:])
    assert pending.max_us >= 1_000_000  # they had waited through the first SYN timeout
    assert hdr.users_not_established == 8  # nobody ever had a reply


def unanswered(result: Any) -> int:
    assert result.hdr is not None, result.output[-3000:]
    lat = result.hdr.names.get("unanswered")
    return lat.count if lat is not None else 0


@pytest.mark.slow
@pytest.mark.alone  # 1,000 connections and exact counts of who was answered within a 5 s deadline
def test_two_workers_lose_no_unanswered_user(start: Any, tmp_path: Path) -> None:
    """Pool (32 threads) at 500 users: --processes 2 counts the users left waiting as one process does.

    Each waiting user is recorded in its ``on_stop``, which may take the quit timeout (2 s):
    a master that quits 0.5 s after telling its workers lost those last reports.
    """
    one, two = start("pool", backlog=1024), start("pool", backlog=1024)  # a server each: the runs go side by side
    args = ("--rate", "1000", "--messages-per-session", "1000", "--establish-timeout", "5", "--swarmbench-window", "2")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run_locust, "chat.py", tmp_path / "one", one.url, *args, users=500, seconds=60),
                pool.submit(run_locust, "chat.py", tmp_path / "two", two.url, *args, "--processes", "2", users=500,
                            seconds=60)]  # fmt: skip
        single, double = (run.result() for run in runs)
    assert unanswered(single) == 500 - 32, single.output[-2000:]
    assert unanswered(double) == 500 - 32, double.output[-2000:]
    assert double.hdr is not None and double.hdr.workers_missing_final == ()
    assert double.hdr.users_not_established == single.hdr.users_not_established == 500 - 32
    # the census at the window's end, taken in each worker and merged: every stuck user's messages count
    for run in (single, double):
        census = run.hdr.names["message_censored"]
        assert census.count >= 500 - 32 and census.max_us >= 2_000_000, census


def test_a_check_on_missing_data_fails_with_a_line_saying_so() -> None:
    """No server sample and an unreadable kernel counter: the checks break, they never pass on nothing."""
    from harness.checks import cell_metrics, evaluate, parse_check
    from harness.results import CellResult, Latency, ServerStats

    cell = CellResult(
        variant="target", users=10, scenario="chat", status="ok", started_at=0.0, ended_at=10.0, warmup_s=1.0,
        duration_s=5.0, latency={"message": Latency(count=10, p99_us=900.0)}, server=ServerStats(samples=0),
        kernel={"ListenOverflows": None},
    )  # fmt: skip
    rows = [("target u=10", cell_metrics(cell))]
    broken = evaluate([parse_check("server.threads_max<=50"), parse_check("kernel.ListenOverflows==0")], rows)
    assert len(broken) == 2 and all("was not measured (no data)" in line for line in broken), broken


def test_achieved_below_asked_misses_the_slo_with_that_reason() -> None:
    from harness.results import CellResult, Latency
    from reports.findings import find, miss_reason

    def cell(throughput: float, never: int = 0) -> CellResult:
        return CellResult(
            variant="selectors", users=500, scenario="chat", status="ok", started_at=0.0, ended_at=10.0,
            warmup_s=2.0, duration_s=5.0, throughput=throughput, rate=10000.0, window_s=5.0,
            latency={"message": Latency(count=int(throughput * 5), p50_us=300.0, p99_us=2000.0)},
            users_not_established=never,
        )  # fmt: skip

    assert miss_reason(cell(9700.0), 10.0) is None
    reason = miss_reason(cell(8000.0), 10.0)
    assert reason is not None and "achieved 8,000 of the 10,000 messages/s asked (80%" in reason
    never = miss_reason(cell(9900.0, never=40), 10.0)
    assert never is not None and "40 of 500 users never had a reply" in never
    assert any(f.kind == "established" and f.value == 40 for f in find(None, [cell(9900.0, never=40)]))
