"""A fixed pool of worker threads, each serving one whole connection at a time.

The accept loop only accepts and enqueues; ``--workers`` threads take
connections from the queue and serve each to its end with the reference's
blocking loop. Once connections outnumber workers, the extra ones wait in the
queue unanswered: the design this variant exists to show.

Time in the queue counts against ``--idle-timeout`` and the TLS handshake's
limit, as it would in a design that reads every connection at once: a worker
closes a connection that was silent that long without spending a read
timeout on it, so idle connections cannot hold a queue of live ones behind them.
"""

from __future__ import annotations

import argparse
import queue
import socket
import threading
import time

from server.args import whole_number
from server.base import LOG, ServerOptions, format_address
from server.blocking import BlockingServer

DEFAULT_WORKERS = 32
#: More threads than this is a typo, not a pool (the reference's thread per connection is the design for that).
MAX_WORKERS = 10_000


class PoolServer(BlockingServer):
    """``--workers`` threads serve whole connections taken from a queue."""

    name = "pool"
    description = "a fixed pool of worker threads serving whole connections from a queue"

    def __init__(self, options: ServerOptions, workers: int = DEFAULT_WORKERS) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"--workers must be 1-{MAX_WORKERS}, got {workers}")
        super().__init__(options)
        self.workers = workers
        #: (socket, address, when accepted), or None: a worker's signal to stop.
        self._queue: queue.SimpleQueue[tuple[socket.socket, tuple, float] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--workers", type=whole_number(1, MAX_WORKERS), default=DEFAULT_WORKERS,
            help=f"worker threads, each serving one connection at a time, 1-{MAX_WORKERS} (default %(default)s)",
        )  # fmt: skip

    def serve(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._worker, name=f"worker-{index}", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # can't start new thread: a smaller pool would measure another design
                LOG.error("Worker thread %d did not start: %s; stopping", index, exc)
                raise SystemExit(1) from None
            self._threads.append(thread)
        self.accept_loop(self._enqueue)

    def _enqueue(self, sock: socket.socket, address: tuple) -> None:
        self.clients.add(sock)
        self._queue.put((sock, address, time.monotonic()))

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sock, address, accepted = item
            try:
                if self.stopping:
                    self.clients.discard(sock)
                    sock.close()
                else:
                    self.serve_client(sock, address, accepted)  # closes the socket
            except Exception:  # a bug must not cost a worker: the pool would shrink silently
                LOG.exception("Worker failed serving %s", format_address(address))

    def close(self) -> None:
        """Stop the workers: wake the busy ones (shutdown) and the idle ones (sentinels)."""
        for _ in self._threads:
            self._queue.put(None)
        self.clients.shutdown_all()  # queued sockets too: a worker that takes one sees EOF at once
        deadline = time.monotonic() + 1.0
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        super().close()
