"""Watch a server process (and its children) from beside it: threads, CPU, memory, sockets.

A background thread reads the process tree a few times a second with psutil.
It runs on the same small machine as the server and the load generator, so
each reading is kept cheap: one ``oneshot()`` per process, the list of
children rescanned once a second rather than every time (finding children
reads every process on the machine), and connections counted by the kernel
(a filtered sock_diag dump) instead of psutil's per-process matching of
socket inodes against the whole ``/proc/net/tcp`` table.

Works for a server the harness started and for any PID a user names. A
process that exits (or is a zombie) ends sampling with a last sample whose
``alive`` is False; nothing is raised.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from harness.kernel import ConnectionCounter

#: Seconds between rescans of the process tree (prefork children are found within this).
TREE_RESCAN = 1.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the whole process tree."""

    t: float  # time.time() of the reading (wall clock: joined with Locust's per-second intervals)
    alive: bool
    threads: int
    cpu_percent: float  # % of one core since the previous sample (tree total, can exceed 100)
    rss_bytes: int
    fds: int  # open file descriptors; -1 where the process may not be inspected (another user's)
    connections: int  # ESTABLISHED on the port (0 when port is None)
    #: Proportional set size over the tree (a page shared by N processes counts 1/N in each), so
    #: prefork's copy-on-write pages count once; None where it may not be read.
    pss_bytes: int | None = None


def _dead(t: float) -> Sample:
    return Sample(t=t, alive=False, threads=0, cpu_percent=0.0, rss_bytes=0, fds=0, connections=0)


def _pss(proc: psutil.Process) -> int | None:
    try:
        return int(proc.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError, OSError):
        return None


class Sampler:
    """Sample a process tree at a set rate in a background thread.

    ``start()`` takes a CPU baseline at once, so the first sample's
    ``cpu_percent`` covers the first interval (not psutil's first-call 0).
    """

    def __init__(
        self,
        pid: int,
        port: int | None = None,
        interval: float = 0.25,
        on_sample: Callable[[Sample], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        try:
            self.root = psutil.Process(pid)
        except (psutil.NoSuchProcess, ValueError):
            raise ProcessLookupError(f"no process with PID {pid}") from None
        self.pid = pid
        self.port = port
        self.interval = interval
        self.on_sample = on_sample
        self.counter = ConnectionCounter(pid, port) if port is not None else None
        self._procs: dict[int, psutil.Process] = {pid: self.root}
        self._cpu: dict[int, float] = {}  # pid -> user+system seconds at the previous reading
        self._last_ns = 0
        self._last_wall = 0.0
        self._next_scan = 0
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False

    # -- public API --------------------------------------------------------------
    def start(self) -> Sampler:
        """Take the CPU baseline and start sampling; a second call does nothing."""
        if self._thread is None:
            self._read()  # baseline: the first sample's cpu_percent covers one interval
            with self._lock:
                self._samples.clear()
            self._thread = threading.Thread(target=self._run, name=f"sampler-{self.pid}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop sampling, join the thread and return every sample (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        return self.samples()

    def samples(self) -> list[Sample]:
        """A copy of the samples so far, safe while sampling runs."""
        with self._lock:
            return list(self._samples)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def read(self) -> Sample:
        """Read the tree once, now, without storing it (for a sampler that is not running)."""
        if self.running:
            raise RuntimeError("read() would race the sampling thread; use samples()")
        return self._read()

    def _read(self) -> Sample:
        now_ns = time.perf_counter_ns()
        wall = time.time()
        if self._ended:
            return _dead(wall)
        if now_ns >= self._next_scan:
            self._rescan()
            self._next_scan = now_ns + int(TREE_RESCAN * 1e9)
        threads = rss = fds = 0
        pss: int | None = 0
        cpu_seconds = 0.0
        cpu_now: dict[int, float] = {}
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        raise psutil.ZombieProcess(pid)
                    times = proc.cpu_times()
                    proc_threads = proc.num_threads()
                    proc_rss = proc.memory_info().rss
                    proc_pss = _pss(proc)
                    try:
                        proc_fds = proc.num_fds()
                    except psutil.AccessDenied:
                        proc_fds = -1
            except psutil.NoSuchProcess:  # ZombieProcess included
                if pid == self.pid:
                    self._ended = True
                    return _dead(wall)
                del self._procs[pid]
                continue
            total = times.user + times.system
            cpu_now[pid] = total
            previous = self._cpu.get(pid)
            if previous is None:  # first seen: all of it is new if it started since the last reading
                previous = 0.0 if self._started_after(proc, self._last_wall) else total
            cpu_seconds += total - previous
            threads += proc_threads
            rss += proc_rss
            pss = None if pss is None or proc_pss is None else pss + proc_pss
            fds = -1 if proc_fds < 0 or fds < 0 else fds + proc_fds
        connections = self.counter.count() if self.counter is not None else 0
        elapsed = (now_ns - self._last_ns) / 1e9 if self._last_ns else 0.0
        cpu_percent = 100.0 * max(cpu_seconds, 0.0) / elapsed if elapsed > 0 else 0.0
        self._cpu = cpu_now
        self._last_ns = now_ns
        self._last_wall = wall
        return Sample(wall, True, threads, cpu_percent, rss, fds, connections, pss)

    # -- internals ---------------------------------------------------------------
    def _rescan(self) -> None:
        """Refresh the set of descendants (keeping known Process objects: their identity)."""
        try:
            children = self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return  # read() reports the death
        current: dict[int, psutil.Process] = {self.pid: self.root}
        for child in children:
            current[child.pid] = self._procs.get(child.pid, child)
        self._procs = current

    @staticmethod
    def _started_after(proc: psutil.Process, wall: float) -> bool:
        if not wall:
            return False
        try:
            return proc.create_time() >= wall
        except psutil.Error:
            return False

    def _run(self) -> None:
        deadline = time.monotonic() + self.interval
        while not self._stop.wait(max(deadline - time.monotonic(), 0.0)):
            sample = self._read()
            with self._lock:
                self._samples.append(sample)
            if self.on_sample is not None:
                self.on_sample(sample)
            if not sample.alive:
                return
            deadline += self.interval
            now = time.monotonic()
            if deadline < now:  # fell behind (machine busy): skip, don't burst
                deadline = now + self.interval


def summarize(
    samples: Sequence[Sample], t0: float | None = None, t1: float | None = None
) -> dict[str, float | int | bool | None]:
    """Means and maxima over the samples with ``t0 <= t <= t1``.

    Means and maxima are over live samples only (a dead one reads all zeros);
    with no live sample every figure is None (not measured), never 0.
    ``died`` says whether any sample in the window found the server gone.
    """
    window = [s for s in samples if (t0 is None or s.t >= t0) and (t1 is None or s.t <= t1)]
    live = [s for s in window if s.alive]
    n = len(live)
    pss = [s.pss_bytes for s in live if s.pss_bytes is not None]
    return {
        "threads_mean": sum(s.threads for s in live) / n if n else None,
        "threads_max": max((s.threads for s in live), default=None),
        "cpu_percent_mean": sum(s.cpu_percent for s in live) / n if n else None,
        "cpu_percent_max": max((s.cpu_percent for s in live), default=None),
        "rss_bytes_max": max((s.rss_bytes for s in live), default=None),
        "pss_bytes_max": max(pss) if pss and len(pss) == n else None,
        "fds_max": max((s.fds for s in live), default=None),
        "connections_mean": sum(s.connections for s in live) / n if n else None,
        "connections_max": max((s.connections for s in live), default=None),
        "samples": len(window),
        "died": any(not s.alive for s in window),
    }


def format_sample(sample: Sample) -> str:
    """One line: wall time, then the readings."""
    clock = time.strftime("%H:%M:%S", time.localtime(sample.t)) + f".{int(sample.t % 1 * 1000):03d}"
    if not sample.alive:
        return f"{clock} process gone"
    return (
        f"{clock} threads={sample.threads} cpu={sample.cpu_percent:.1f}% "
        f"rss={sample.rss_bytes / 2**20:.1f}MiB fds={sample.fds} conns={sample.connections}"
    )


def _print_sample(sample: Sample) -> None:
    print(format_sample(sample), flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.server_sampler PID [--port P] [--interval S] [--duration S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.server_sampler",
        description="Print a server's threads, CPU, RSS, fds and connections, one line per sample.",
    )
    parser.add_argument("pid", type=int)
    parser.add_argument("--port", type=int, default=None, help="count ESTABLISHED connections on this port")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between samples (default 0.25)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        print(f"error: --port must be 1..65535, not {args.port}", file=sys.stderr)
        return 2
    try:
        sampler = Sampler(args.pid, args.port, args.interval, on_sample=_print_sample)
    except (ProcessLookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sampler.start()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while sampler.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05 if deadline is None else min(0.05, max(deadline - time.monotonic(), 0.0)))
    except KeyboardInterrupt:
        pass
    samples = sampler.stop()
    if not samples or samples[-1].alive:
        return 0
    return 1  # the process went away while watched


if __name__ == "__main__":
    raise SystemExit(main())
