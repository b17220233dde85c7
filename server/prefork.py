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
listener: it only watches its workers, replaces the ones that die (a new
SO_REUSEPORT listener each; a crash loop is capped, see MAX_RESTARTS), and
stops them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import time
from collections import deque

from server.args import positive_int
from server.aio import AsyncioServer, add_loop_argument, check_loop
from server.base import LOG, BaseServer, ServerOptions, make_listener

#: How often the parent looks for workers that died (it sleeps on its wake socket).
REAP_INTERVAL = 0.25
#: A crash loop must not fork forever: past this many deaths within RESTART_WINDOW
#: seconds, a worker that dies is not replaced (logged).
MAX_RESTARTS = 5
RESTART_WINDOW = 10.0


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
        self.deaths: deque[float] = deque()  # when workers died, within RESTART_WINDOW
        self._worker_options = options
        # Workers stop when this pipe reaches EOF: when the parent closes it, or dies.
        self._alive_r = self._alive_w = -1

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
        self._worker_options = dataclasses.replace(self.options, port=self.listener.getsockname()[1])
        self._alive_r, self._alive_w = os.pipe()
        try:
            for index in range(self.processes):
                try:
                    self._fork(index, self.listener if index == 0 else None)
                except OSError as exc:
                    LOG.error("fork() failed for worker %d: %s; stopping", index, exc.strerror)
                    raise SystemExit(1) from None
            self.listener.close()  # worker 0 owns it now
            self._watch()
        finally:
            os.close(self._alive_w)
            os.close(self._alive_r)
            self._stop_workers()

    def _fork(self, index: int, listener: socket.socket | None) -> int:
        """Start worker ``index`` (on ``listener``, or on a new SO_REUSEPORT one); return its pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(self._alive_w)
            os._exit(self._worker(index, listener))
        self.workers[pid] = index
        return pid

    def _watch(self) -> None:
        """Sleep on the wake socket; every REAP_INTERVAL, replace workers that died."""
        while not self.stopping:
            self.wait_wake(REAP_INTERVAL)  # poll(): no descriptor for a replacement worker to inherit
            if self.stopping:
                return
            for pid, status in self._reap():
                self._replace(self.workers.pop(pid), pid, describe_status(status))
            if not self.workers:
                LOG.error("Every worker died; stopping")
                raise SystemExit(1)

    def _replace(self, index: int, pid: int, how: str) -> None:
        """Fork a new worker for one that died, unless workers die too fast (a crash loop)."""
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths[0] < now - RESTART_WINDOW:
            self.deaths.popleft()
        left = f"{len(self.workers)} of {self.processes} left"
        if len(self.deaths) > MAX_RESTARTS:
            LOG.error(
                "Worker %d (pid %d) died (%s); not replaced: %d deaths within %g s; %s",
                index, pid, how, len(self.deaths), RESTART_WINDOW, left,
            )  # fmt: skip
            return
        try:
            new = self._fork(index, None)
        except OSError as exc:
            LOG.error("Worker %d (pid %d) died (%s); fork() failed: %s; %s", index, pid, how, exc.strerror, left)
            return
        LOG.warning("Worker %d (pid %d) died (%s); replaced by pid %d", index, pid, how, new)

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
    def _worker(self, index: int, listener: socket.socket | None) -> int:  # pragma: no cover
        """Run one worker's event loop; return its exit code (never returns into the parent's code)."""
        code = 0
        options = self._worker_options
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
            self._wake_r.close()
            self._wake_w.close()
            if listener is None:
                assert self.listener is not None
                self.listener.close()  # worker 0's: holding it would keep its queue alive after it dies
                listener = make_listener(options.host, options.port, options.backlog, reuse_port=True)
            worker = AsyncioServer(options, loop=self.loop_name)
            worker.session_class = self.session_class  # type: ignore[misc]
            worker.listener = listener
            worker.stop_fds.append(self._alive_r)
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
