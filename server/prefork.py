"""N processes, each with its own SO_REUSEPORT listener and an asyncio event loop.

How the port is shared: the parent binds and listens first (so ``--port 0``
learns the real port and "Serving on" is printed once, with it), then forks.
Worker 0 keeps the parent's socket; every other worker binds a new socket to
the same address with SO_REUSEPORT. The kernel then hashes each incoming
connection to one of N listeners, each with its own accept queue, owned by
exactly one process: load balancing with no shared queue and no thundering
herd, and no connection lost (a socket shared by all workers would be one queue
that every worker races for; closing the parent's socket once the workers had
their own would reset whatever was queued on it). The parent then holds no
listener: it only watches its workers, logs the ones that die, and stops them.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import time

from server.args import positive_int
from server.aio import AsyncioServer, add_loop_argument, check_loop
from server.base import LOG, BaseServer, ServerOptions

#: How often the parent looks for workers that died (it sleeps on its wake socket).
REAP_INTERVAL = 0.25


def reuseport_listener(options: ServerOptions) -> socket.socket:
    """A new non-blocking listener on ``options``' address, joining the SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((options.host, options.port))
        sock.listen(options.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class PreforkServer(BaseServer):
    """A parent that forks ``--processes`` asyncio workers sharing one port."""

    name = "prefork"
    description = "N processes with SO_REUSEPORT listeners, each an asyncio event loop"
    reuse_port = True

    def __init__(self, options: ServerOptions, processes: int | None = None, loop: str = "asyncio") -> None:
        processes = processes if processes is not None else (os.cpu_count() or 1)
        if processes < 1:
            raise ValueError(f"--processes must be at least 1, got {processes}")
        if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("prefork needs fork() and SO_REUSEPORT (Linux or a BSD)")
        check_loop(loop)
        super().__init__(options)
        self.processes = processes
        self.loop_name = loop
        self.workers: dict[int, int] = {}  # pid -> worker index

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--processes", type=positive_int, default=None,
            help="worker processes (default: the number of CPUs, here %d)" % (os.cpu_count() or 1),
        )  # fmt: skip
        add_loop_argument(parser)

    # -- parent ----------------------------------------------------------------
    def serve(self) -> None:
        assert self.listener is not None
        port = self.listener.getsockname()[1]
        options = ServerOptions(
            host=self.options.host, port=port, backlog=self.options.backlog,
            recv_size=self.options.recv_size, delay=self.options.delay,
        )  # fmt: skip
        # Workers stop when this pipe reaches EOF: when the parent closes it, or dies.
        alive_r, alive_w = os.pipe()
        try:
            for index in range(self.processes):
                sys.stdout.flush()
                sys.stderr.flush()
                try:
                    pid = os.fork()
                except OSError as exc:
                    LOG.error("fork() failed for worker %d: %s; stopping", index, exc.strerror)
                    raise SystemExit(1) from None
                if pid == 0:  # pragma: no cover - runs in the child
                    os.close(alive_w)
                    os._exit(self._worker(index, options, alive_r))
                self.workers[pid] = index
            os.close(alive_r)
            alive_r = -1
            self.listener.close()  # worker 0 owns it now
            self._watch()
        finally:
            os.close(alive_w)
            if alive_r != -1:
                os.close(alive_r)
            self._stop_workers()

    def _watch(self) -> None:
        """Sleep on the wake socket; every REAP_INTERVAL, log workers that died."""
        sel = selectors.DefaultSelector()
        sel.register(self.wake_socket, selectors.EVENT_READ)
        try:
            while not self.stopping:
                sel.select(REAP_INTERVAL)
                if self.stopping:
                    return
                for pid, status in self._reap():
                    index = self.workers.pop(pid)
                    LOG.warning(
                        "Worker %d (pid %d) died (%s); %d of %d left",
                        index, pid, describe_status(status), len(self.workers), self.processes,
                    )  # fmt: skip
                if not self.workers:
                    LOG.error("Every worker died; stopping")
                    raise SystemExit(1)
        finally:
            sel.close()

    def _reap(self) -> list[tuple[int, int]]:
        reaped = []
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.workers:
                reaped.append((pid, status))
        return reaped

    def _stop_workers(self) -> None:
        """The pipe is closed: wait up to 1.5 s for the workers, then SIGKILL the rest."""
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)  # also stops a worker stuck outside its loop
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 1.5
        while self.workers and time.monotonic() < deadline:
            for pid, _status in self._reap():
                self.workers.pop(pid, None)
            if self.workers:
                time.sleep(0.01)
        for pid in list(self.workers):
            LOG.warning("Worker %d (pid %d) did not stop; killing it", self.workers[pid], pid)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            del self.workers[pid]

    # -- child -----------------------------------------------------------------
    def _worker(self, index: int, options: ServerOptions, alive_fd: int) -> int:  # pragma: no cover
        """Run one worker's event loop; return its exit code (never returns into the parent's code)."""
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
            self._wake_r.close()
            self._wake_w.close()
            assert self.listener is not None
            if index == 0:
                listener = self.listener
            else:
                self.listener.close()  # worker 0's: holding it would keep its queue alive after it dies
                listener = reuseport_listener(options)
            worker = AsyncioServer(options, loop=self.loop_name)
            worker.listener = listener
            worker.stop_fds.append(alive_fd)
            signal.signal(signal.SIGTERM, lambda signum, frame: worker.shutdown())
            try:
                worker.serve()
            finally:
                worker.close()
        except BaseException as exc:  # noqa: BLE001 - the child must reach os._exit
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                LOG.error("Worker %d failed: %s: %s", index, exc.__class__.__name__, exc)
                code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return code


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
