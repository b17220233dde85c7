"""Run one cell's load through Locust's own command line, in its own process group.

The harness never drives Locust from the inside: it runs ``locust -f SCENARIO
--headless ...`` exactly as a user would, so a scenario file behaves the same
in a sweep and on its own (through :mod:`harness.locust_main`, Locust's own main with
Swarmbench's packages bound first, so a project's ``server/`` or ``harness/`` package in the
working directory cannot shadow them). The run always ends on time: past its deadline the
process group is stopped, then killed.

With a window (``window_s``), the phases inside Locust end the run themselves once
every user is established, the settle has passed and the window is measured
(:mod:`harness.user.phases`); ``-t`` is then only the upper bound: the
establishment deadline + settle + window + ``RUN_TIME_SLACK``.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.processes import die_with_parent, no_interrupts, stop_group

#: A row of Locust's periodic console table for the request name "message".
MESSAGE_ROW_RE = re.compile(r"^\S+\s+message\s+(\d+)\s.*\|\s*([\d.]+)\s+([\d.]+)\s*$", re.MULTILINE)
#: Locust prints its console table every 2 s (headless, by default).
CONSOLE_INTERVAL_S = 2.0
#: Seconds Locust gets after its -t to send quits, merge and write its files.
GRACE_S = 20.0
#: Seconds a master waits for its --expect-workers before giving up on the cell (``--worker-wait``).
WORKER_WAIT_S = 120.0
#: Loaded beside the scenario by a master and by ``swarmbench worker``: who joined, and the sweep's end.
SWEEP_LINK = Path(__file__).resolve().parent / "user" / "sweep_link.py"
#: Locust's line when a master gives up waiting, and sweep_link's line for each worker that joined.
GAVE_UP = "Gave up waiting for workers to connect"
JOINED_RE = re.compile(r"swarmbench: worker joined \((\d+) of (\d+)\)")
#: With a window, Locust's -t is past the planned end by this much (the master's wait for its
#: workers' final reports, harness.user.phases.FINAL_REPORT_WAIT, included).
RUN_TIME_SLACK = 20.0


@dataclass(frozen=True, slots=True)
class LocustJob:
    scenario: Path
    host_url: str
    users: int
    spawn_rate: float
    run_time_s: float
    hdr_file: Path
    log_file: Path
    json_file: Path
    workers: int = 0
    rate: float | None = None
    extra_args: tuple[str, ...] = ()
    #: Distributed: run as master and wait for this many workers (on this or other machines).
    expect_workers: int = 0
    #: Where the master listens: for --expect-workers (remote workers), or the local --processes ones.
    master_bind: tuple[str, int] = ("127.0.0.1", 5557)
    worker_wait_s: float = WORKER_WAIT_S
    #: Distributed: the sweep's last cell, whose master tells the workers the sweep ends.
    last_cell: bool = False
    #: The phases (harness.user.phases): 0 window: Locust's -t (run_time_s) ends the run.
    establish_timeout: float = 30.0
    settle_s: float = 0.0
    window_s: float = 0.0
    #: The server's PID where known: the live view (web UI tabs, /metrics) shows it (harness.user.live_view).
    server_pid: int | None = None

    @property
    def locust_run_time_s(self) -> float:
        """Locust's -t: the run time, or with a window the bound past the latest planned end."""
        if self.window_s > 0:
            return self.establish_timeout + self.settle_s + self.window_s + RUN_TIME_SLACK
        return self.run_time_s

    @property
    def deadline_s(self) -> float:
        """How long the run may take before the harness stops it."""
        return self.locust_run_time_s + GRACE_S + (self.worker_wait_s if self.expect_workers else 0.0)

    def argv(self) -> list[str]:
        files = f"{self.scenario},{SWEEP_LINK}" if self.expect_workers else str(self.scenario)
        argv = [
            sys.executable, "-P", "-m", "harness.locust_main", "-f", files,
            "--headless", "--host", self.host_url,
            "-u", str(self.users), "-r", f"{self.spawn_rate:g}",
            "-t", f"{max(1, math.ceil(self.locust_run_time_s))}s",
            "--hdr-file", str(self.hdr_file),
            "--json-file", str(self.json_file.with_suffix("")),
            "--loglevel", "WARNING",
        ]  # fmt: skip
        if self.workers:  # the forked workers connect to --master-host/--master-port
            host, port = self.master_bind
            argv += ["--processes", str(self.workers), "--master-bind-host", host, "--master-bind-port", str(port),
                     "--master-host", host, "--master-port", str(port)]  # fmt: skip
        if self.expect_workers:
            argv += [
                "--master", "--expect-workers", str(self.expect_workers),
                "--expect-workers-max-wait", f"{self.worker_wait_s:g}",
                "--master-bind-host", self.master_bind[0], "--master-bind-port", str(self.master_bind[1]),
            ]  # fmt: skip
            if self.last_cell:
                argv.append("--swarmbench-last-cell")
        if self.rate:
            argv += ["--rate", f"{self.rate:g}"]
        if self.window_s > 0:
            argv += ["--establish-timeout", f"{self.establish_timeout:g}", "--swarmbench-settle", f"{self.settle_s:g}",
                     "--swarmbench-window", f"{self.window_s:g}"]  # fmt: skip
        if self.server_pid:
            argv += ["--server-pid", str(self.server_pid)]
        return argv + list(self.extra_args)


@dataclass(frozen=True, slots=True)
class LocustOutcome:
    argv: tuple[str, ...]
    exit_code: int | None
    timed_out: bool
    interrupted: bool
    started_at: float
    ended_at: float

    def error(self, log_file: Path) -> str | None:
        """A one-line reason when Locust did not finish as it should (exit 1 means 'there were failures')."""
        if self.interrupted:
            return "interrupted"
        if self.timed_out:
            return "Locust did not stop in time after its run time and was killed"
        if self.exit_code == 1 and (missing := workers_missing(log_file, self.argv)) is not None:
            return missing
        if self.exit_code in (0, 1):
            return None
        return f"Locust exited with code {self.exit_code}: {last_error_line(log_file)}"


def workers_missing(log_file: Path, argv: Sequence[str]) -> str | None:
    """'only 1 of 2 workers joined within 5 s (--worker-wait)' when the master gave up waiting, else None."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return None
    if GAVE_UP not in text:
        return None
    joined = JOINED_RE.findall(text)
    expected = argv[argv.index("--expect-workers") + 1] if "--expect-workers" in argv else "?"
    wait = argv[argv.index("--expect-workers-max-wait") + 1] if "--expect-workers-max-wait" in argv else "?"
    return (f"only {joined[-1][0] if joined else 0} of {expected} workers joined within {wait} s "
            "(--worker-wait); the cell did not run")


def last_error_line(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


def run_locust(
    job: LocustJob,
    on_tick: Callable[[float | None], None] | None = None,
    env: dict[str, str] | None = None,
) -> LocustOutcome:
    """Run Locust to the end (or its deadline); ``on_tick(messages_per_s)`` twice a second.

    A KeyboardInterrupt stops Locust (SIGTERM: it still writes its files) and is
    re-raised once Locust has gone.
    """
    argv = job.argv()
    started = time.time()
    deadline = time.monotonic() + job.deadline_s
    job.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log_file, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160", **(env or {})},
        )
    timed_out = False
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                timed_out = True
                stop_group(proc)
                break
            if on_tick is not None:
                on_tick(live_rate(job.log_file))
            try:
                proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt:
        with no_interrupts():
            stop_group(proc)
        raise
    return LocustOutcome(tuple(argv), proc.returncode, timed_out, False, started, time.time())


def live_rate(log_file: Path, tail_bytes: int = 16384) -> float | None:
    """The current messages/s from the last console table Locust printed."""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    rows = MESSAGE_ROW_RE.findall(text)
    if len(rows) >= 2:  # Locust's own req/s lags; the count's growth between two tables does not
        return max(0.0, (int(rows[-1][0]) - int(rows[-2][0])) / CONSOLE_INTERVAL_S)
    return float(rows[-1][1]) if rows else None


def spawn_rate(users: int, warmup_s: float) -> float:
    """Spawn every user within the first half of the warm-up (at once when there is none)."""
    if warmup_s <= 0:
        return float(users)
    return max(1.0, users / max(warmup_s / 2.0, 0.5))


def free_local_port() -> int:
    """A port free on 127.0.0.1 now (bound to port 0, then released), for a local Locust master."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
