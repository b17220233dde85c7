"""The server sampler and the kernel's TCP counters, against real processes and sockets."""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from helpers import wait_until

from harness.kernel import WATCHED, ConnectionCounter, counter_deltas, parse_counter_table, read_tcp_counters
from harness.server_sampler import Sample, Sampler, main, summarize
from harness.server_process import RunningServer
from server.variants import VARIANTS

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

CLIENTS = 100
StartServer = Callable[..., RunningServer]


@contextmanager
def clients(server: RunningServer, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections, each past one message and its ``-``: accepted and served."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(server.address, timeout=10)
            socks.append(sock)
            sock.sendall(b"hello")
            assert sock.recv(1) == b"-"
        yield socks
    finally:
        for sock in socks:
            sock.close()


def last(sampler: Sampler) -> Sample:
    """The newest sample (waits, bounded, for the first one)."""
    wait_until(lambda: bool(sampler.samples()), 5, "a first sample")
    return sampler.samples()[-1]


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


# -- the process tree: threads, fds, RSS, connections ---------------------------------
def test_threaded_threads_rise_with_connections_and_fall_after(start: StartServer) -> None:
    server = start("threaded")
    with Sampler(server.pid, server.port, interval=0.1) as sampler:
        base = last(sampler)
        assert base.alive and base.connections == 0
        with clients(server, CLIENTS):
            wait_until(lambda: last(sampler).threads >= base.threads + CLIENTS, 10, "a thread per client")
            wait_until(lambda: last(sampler).connections == CLIENTS, 10, f"{CLIENTS} connections")
            peak = last(sampler)
        wait_until(lambda: last(sampler).threads <= base.threads + 2, 10, "the client threads to end")
        wait_until(lambda: last(sampler).connections == 0, 10, "no connections left")
    samples = sampler.stop()
    assert all(s.alive for s in samples)
    assert peak.fds >= base.fds + CLIENTS
    summary = summarize(samples)
    assert summary["threads_max"] >= base.threads + CLIENTS
    assert summary["connections_max"] == CLIENTS
    assert summary["died"] is False and summary["samples"] == len(samples)


@pytest.mark.parametrize("variant", ["selectors", "asyncio"])
def test_event_loop_variants_keep_threads_flat(start: StartServer, variant: str) -> None:
    assert variant in VARIANTS  # a variant dropped from the registry fails here, not silently
    server = start(variant)
    with Sampler(server.pid, server.port, interval=0.1) as sampler:
        base = last(sampler)
        with clients(server, CLIENTS):
            wait_until(lambda: last(sampler).connections == CLIENTS, 10, f"{CLIENTS} connections")
            busy = sampler.samples()
    during = [s.threads for s in busy if s.t >= base.t]
    assert max(during) <= base.threads + 2, f"{variant}: threads went from {base.threads} to {max(during)}"


def test_prefork_tree_is_summed(start: StartServer) -> None:
    server = start("prefork", extra_args=["--processes", "2"])
    root = psutil.Process(server.pid)
    wait_until(lambda: len(root.children(recursive=True)) == 2, 10, "2 workers")
    tree = [root, *root.children(recursive=True)]
    with clients(server, 20), Sampler(server.pid, server.port, interval=0.1) as sampler:
        wait_until(lambda: last(sampler).connections == 20, 10, "20 connections over the workers")
        wait_until(
            lambda: last(sampler).threads == sum(p.num_threads() for p in tree)
            and last(sampler).fds == sum(p.num_fds() for p in tree),
            10,
            "threads and fds summed over parent and workers",
        )
        assert last(sampler).fds > root.num_fds()


def test_prefork_memory_is_pss_so_shared_pages_count_once(start: StartServer) -> None:
    """Forked workers share the parent's pages: RSS summed over the tree counts them again, PSS once."""
    server = start("prefork", extra_args=["--processes", "2"])
    root = psutil.Process(server.pid)
    wait_until(lambda: len(root.children(recursive=True)) == 2, 10, "2 workers")
    with Sampler(server.pid, server.port, interval=0.1) as sampler:
        wait_until(lambda: last(sampler).pss_bytes is not None and last(sampler).threads >= 3, 10, "a PSS reading")
        sample = last(sampler)
    tree = [root, *root.children(recursive=True)]
    pss = sum(p.memory_full_info().pss for p in tree)
    assert sample.pss_bytes is not None and 0 < sample.pss_bytes < sample.rss_bytes  # shared pages once
    assert abs(sample.pss_bytes - pss) < 0.2 * pss
    summary = summarize([sample])
    assert summary["pss_bytes_max"] == sample.pss_bytes


def test_readings_match_proc(start: StartServer) -> None:
    server = start("threaded")
    with clients(server, 20):
        sampler = Sampler(server.pid, server.port)
        wait_until(lambda: sampler.read().connections == 20, 10, "20 connections")
        sample = sampler.read()
        status = proc_status(server.pid)
        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        assert sample.threads == int(status["Threads"])
        assert sample.fds == fds
        vm_rss = int(status["VmRSS"].split()[0]) * 1024
        assert abs(sample.rss_bytes - vm_rss) <= max(vm_rss // 20, 1 << 20)
        # The same count three ways: netlink (the default), /proc/PID/net/tcp, psutil.
        # The port is the OS's pick: a client of an earlier test whose server had it may still be reconnecting
        # and land here (seen once: 21), so the three must agree with one another, read back to back.
        counter = ConnectionCounter(server.pid, server.port)
        assert counter.use_netlink

        def three_ways() -> tuple[int, int, int]:
            counter.use_netlink = True
            netlink = counter.count()
            counter.use_netlink = False
            proc = counter.count()
            by_psutil = [c for c in psutil.Process(server.pid).net_connections("tcp")
                         if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port]  # fmt: skip
            return netlink, proc, len(by_psutil)

        counts = three_ways()
        for _ in range(20):
            if len(set(counts)) == 1:
                break
            time.sleep(0.1)
            counts = three_ways()
        assert len(set(counts)) == 1 and counts[0] >= 20, counts
    with pytest.raises(RuntimeError):  # read() refuses to race a running sampler
        with sampler:
            sampler.read()


# A parent whose child burns a known amount of CPU on cue: tree sums and CPU deltas.
CHILD = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
print("done", flush=True)
time.sleep(60)
"""
PARENT = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"


def readline(stream: object, timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not sel.select(timeout):
            pytest.fail(f"no line within {timeout:.0f} s")
    return stream.readline()  # type: ignore[attr-defined, no-any-return]


def test_tree_sums_and_cpu_over_wall_time() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert readline(parent.stdout, 20) == "ready\n"
        tree = [psutil.Process(parent.pid), *psutil.Process(parent.pid).children(recursive=True)]
        assert len(tree) == 2

        def cpu_total() -> float:
            return sum(t.user + t.system for t in (p.cpu_times() for p in tree))

        before = cpu_total()
        started = time.time()
        sampler = Sampler(parent.pid, interval=0.1).start()
        # the burn starts after a first sample, so the first interval (whose start is known only to the
        # sampler) holds no CPU; and the samples go on until one was read after the burn ended
        wait_until(lambda: sampler.samples(), 10, "a first sample")
        assert parent.stdin is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert readline(parent.stdout, 30) == "done\n"
        done = time.time()
        wait_until(lambda: sampler.samples()[-1].t > done, 10, "a sample after the burn")
        samples = sampler.stop()
        used = cpu_total() - before
        threads = sum(p.num_threads() for p in tree)
        rss = sum(p.memory_info().rss for p in tree)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert used >= 0.35
    # cpu_percent is a rate over each interval: integrated, it gives back the CPU seconds used.
    edges = [started, *(s.t for s in samples)]
    integral = sum(s.cpu_percent / 100 * (b - a) for s, a, b in zip(samples, edges, edges[1:]))
    # what it misses is the clock ticks' rounding (10 ms a reading, per process), not time: no bound in seconds
    # of a busy machine's scheduling enters here
    assert abs(integral - used) <= 0.05 * used + 0.04, (integral, used)
    assert max(s.cpu_percent for s in samples) > 0
    assert samples[-1].threads == threads and samples[-1].fds > 0
    assert abs(samples[-1].rss_bytes - rss) <= 1 << 20


# -- a server that goes away --------------------------------------------------------
@pytest.mark.parametrize("reap", [False, True], ids=["zombie", "reaped"])
def test_vanished_process_ends_sampling(start: StartServer, reap: bool) -> None:
    server = start("threaded")
    sampler = Sampler(server.pid, server.port, interval=0.05).start()
    last(sampler)
    if reap:
        server.kill()
    else:
        os.kill(server.pid, signal.SIGKILL)  # not waited for: a zombie, which counts as gone
    wait_until(lambda: not sampler.running, 5, "sampling to end")
    samples = sampler.stop()
    assert samples[0].alive and not samples[-1].alive
    assert samples == sampler.stop()  # idempotent
    assert summarize(samples)["died"] is True
    assert summarize(samples, t1=samples[0].t)["died"] is False


def test_stop_leaves_no_process_behind(start: StartServer) -> None:
    server = start("threaded")
    pid = server.pid
    with Sampler(pid, server.port, interval=0.05) as sampler:
        with clients(server, 10):
            wait_until(lambda: last(sampler).connections == 10, 10, "10 connections")
            server.stop()
        wait_until(lambda: not sampler.running, 5, "sampling to end")
    assert not psutil.pid_exists(pid)
    assert not sampler.samples()[-1].alive
    assert not sampler.running


# -- summarize and the command line ---------------------------------------------------
def test_summarize_windows_and_dead_samples() -> None:
    samples = [
        Sample(10.0, True, 3, 50.0, 1000, 7, 2),
        Sample(11.0, True, 5, 150.0, 3000, 9, 4),
        Sample(12.0, False, 0, 0.0, 0, 0, 0),
    ]
    whole = summarize(samples)
    assert whole["threads_mean"] == 4 and whole["threads_max"] == 5
    assert whole["cpu_percent_mean"] == 100 and whole["cpu_percent_max"] == 150
    assert whole["rss_bytes_max"] == 3000 and whole["fds_max"] == 9
    assert whole["connections_mean"] == 3 and whole["connections_max"] == 4
    assert whole["samples"] == 3 and whole["died"] is True
    first = summarize(samples, t0=9.5, t1=10.5)
    assert first["samples"] == 1 and first["threads_max"] == 3 and first["died"] is False
    assert summarize([], 0, 1)["samples"] == 0
    # no live sample: nothing measured, every figure None (never 0)
    dead = summarize(samples, t0=11.5, t1=12.5)
    assert dead["samples"] == 1 and dead["died"] is True
    assert dead["threads_max"] is None and dead["cpu_percent_mean"] is None and dead["rss_bytes_max"] is None


def test_cli_prints_samples(start: StartServer, capsys: pytest.CaptureFixture[str]) -> None:
    server = start("threaded")
    assert main([str(server.pid), "--port", str(server.port), "--interval", "0.05", "--duration", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all("threads=" in line and "conns=0" in line for line in lines)


@pytest.mark.parametrize("args", [["{gone}"], ["{self}", "--interval", "0"], ["{self}", "--port", "70000"]])
def test_cli_bad_input_is_one_line(args: list[str]) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its PID names no process (reuse that fast is vanishingly unlikely)
    argv = [a.format(gone=gone.pid, self=os.getpid()) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "harness.server_sampler", *argv], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
