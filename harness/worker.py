"""``swarmbench worker``: a Locust worker that follows a whole distributed sweep, cell after cell.

Each cell of a sweep is a new Locust master, and a Locust worker ends with its
master. This loop starts ``locust -f SCENARIO,harness/user/sweep_link.py
--worker --master-host H --master-port P`` again each time it ends, until:

- the sweep's last master said the sweep ends (sweep_link's message, sent at the
  start of the last cell): exit 0 as soon as that cell ends;
- no master started a cell for ``--master-timeout`` seconds (default 120), the
  fallback when the sweep was interrupted, stopped on a failure, or its last cell
  never ran: exit 0 if this worker ran a cell, else 1; during a cell, a master
  silent (no heartbeat) for as long, at most Locust's own 60 s, ends that cell's
  Locust worker, so a stopped or vanished master does not leave it loading the target;
- its Locust worker fails without running a cell (a bad scenario ...): Locust's
  error line, exit 1;
- Ctrl-C or SIGTERM: the Locust child's process group is stopped; exit 130 or 143.

Imports neither Locust nor gevent: Locust runs as a child, as in a sweep.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from harness import target as _target
from harness.locust_main import MASTER_SILENCE_ENV
from harness.locust_run import SWEEP_LINK, last_error_line
from harness.processes import die_with_parent, no_interrupts, stop_group

#: Locust's default master port.
MASTER_PORT = 5557
MASTER_TIMEOUT_S = 120.0
#: The marks sweep_link leaves (harness/user/sweep_link.py; not imported: it imports Locust).
STATE_ENV = "SWARMBENCH_WORKER_STATE"
CELL_STARTED = "cell-started"
SWEEP_ENDED = "sweep-ended"
#: Between a worker that ended without a cell and the next one: no busy loop against a quitting master.
RESTART_PAUSE_S = 0.5
#: A Locust worker's own limit on a silent master (locust.runners.MASTER_HEARTBEAT_TIMEOUT), and the least
#: silence taken for a master gone: three of its heartbeats (one a second) missed.
LOCUST_MASTER_SILENCE_S = 60.0
MIN_MASTER_SILENCE_S = 3.0


class Stopped(Exception):
    """SIGTERM (or SIGINT) while the loop runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    scenario: Path
    master: tuple[str, int]
    processes: int = 0
    master_timeout_s: float = MASTER_TIMEOUT_S

    def argv(self) -> list[str]:
        host, port = self.master
        argv = [
            sys.executable, "-P", "-m", "harness.locust_main", "-f", f"{self.scenario},{SWEEP_LINK}", "--worker",
            "--master-host", host, "--master-port", str(port), "--loglevel", "WARNING",
        ]  # fmt: skip
        return argv + (["--processes", str(self.processes)] if self.processes else [])

    @property
    def master_silence_s(self) -> float:
        """How long a Locust worker waits for a silent master's heartbeat: ``--master-timeout``, within bounds."""
        return min(max(self.master_timeout_s, MIN_MASTER_SILENCE_S), LOCUST_MASTER_SILENCE_S)


def master_address(text: str) -> tuple[str, int]:
    """``HOST[:PORT]``, ``[IPV6]:PORT`` or ZMQ's ``tcp://HOST[:PORT]`` (port 5557 by default); the name must
    resolve. ValueError if not."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() != "tcp":
            raise ValueError(f"--master {text}: expected HOST[:PORT], [IPV6]:PORT or tcp://HOST[:PORT]")
        text = rest
    if text.startswith("["):
        has_port = "]:" in text
    elif text.count(":") > 1:  # a bare IPv6 address
        text, has_port = f"[{text}]", False
    else:
        has_port = ":" in text
    host, port = _target.split_host(text if has_port else f"{text}:{MASTER_PORT}")
    if _target.literal_family(host) is None:
        try:
            _target.resolve(host, port)
        except (socket.gaierror, UnicodeError) as exc:
            raise ValueError(f"--master {text}: the name does not resolve ({getattr(exc, 'strerror', None) or exc})") from None
    return host, port


def run_worker(cfg: WorkerConfig, out: TextIO = sys.stdout) -> int:
    """Run workers for one sweep; returns the exit code (see the module's docstring)."""
    state = Path(tempfile.mkdtemp(prefix="swarmbench-worker-"))
    where = f"{cfg.master[0]}:{cfg.master[1]}"

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one must not cut the cleanup short
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, on_signal)
    proc: subprocess.Popen[bytes] | None = None
    try:
        cells = 0
        idle_since = time.monotonic()
        say(out, f"worker: joining the sweep's masters at {where}")
        while True:
            for mark in (CELL_STARTED, SWEEP_ENDED):
                (state / mark).unlink(missing_ok=True)
            log_file = state / "locust.log"
            with open(log_file, "wb") as log:
                proc = subprocess.Popen(
                    cfg.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=die_with_parent,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", STATE_ENV: str(state),
                         MASTER_SILENCE_ENV: f"{cfg.master_silence_s:g}"},
                )  # fmt: skip
            while proc.poll() is None:
                if not (state / CELL_STARTED).exists() and time.monotonic() - idle_since > cfg.master_timeout_s:
                    with no_interrupts():
                        stop_group(proc)
                    if cells:
                        say(out, f"worker: no master at {where} started a cell for {cfg.master_timeout_s:g} s "
                                 f"after {cells} cell(s): taking the sweep as over")  # fmt: skip
                        return 0
                    say(sys.stderr, f"swarmbench worker: no master at {where} started a cell within "
                                    f"{cfg.master_timeout_s:g} s (--master-timeout)")  # fmt: skip
                    return 1
                try:
                    proc.wait(0.2)
                except subprocess.TimeoutExpired:
                    pass
            started = (state / CELL_STARTED).exists()
            if started:
                cells += 1
                idle_since = time.monotonic()
                say(out, f"worker: cell {cells} done")
            if (state / SWEEP_ENDED).exists():
                say(out, f"worker: the sweep ended after {cells} cell(s)")
                return 0
            if not started and proc.returncode != 0:
                say(sys.stderr, f"swarmbench worker: Locust exited with code {proc.returncode} before any cell: "
                                f"{last_error_line(log_file)}")  # fmt: skip
                return 1
            if not started:
                time.sleep(RESTART_PAUSE_S)
    except (KeyboardInterrupt, Stopped) as exc:
        if proc is not None:
            with no_interrupts():
                stop_group(proc)
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        say(sys.stderr, "swarmbench worker: stopped")
        return 128 + int(signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(state, ignore_errors=True)


def say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)
