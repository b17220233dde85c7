"""A fixed pool of worker threads, each serving one whole connection at a time.

The accept loop only accepts and enqueues; ``--workers`` threads take
connections from the queue and serve each to its end with the reference's
blocking loop. Once connections outnumber workers, the extra ones wait in the
queue unanswered: the design this variant exists to show.
"""

from __future__ import annotations

import argparse
import queue
import socket
import threading
import time

from server.args import positive_int
from server.base import LOG, BaseServer, ClientRegistry, ServerOptions, format_address

DEFAULT_WORKERS = 32


class PoolServer(BaseServer):
    """``--workers`` threads serve whole connections taken from a queue."""

    name = "pool"
    description = "a fixed pool of worker threads serving whole connections from a queue"

    def __init__(self, options: ServerOptions, workers: int = DEFAULT_WORKERS) -> None:
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        super().__init__(options)
        self.workers = workers
        #: Accepted and queued or being served: shutdown closes every one.
        self.clients = ClientRegistry()
        self._queue: queue.SimpleQueue[tuple[socket.socket, tuple] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--workers", type=positive_int, default=DEFAULT_WORKERS,
            help="worker threads, each serving one connection at a time (default %(default)s)",
        )  # fmt: skip

    def serve(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._worker, name=f"worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.accept_loop(self._enqueue)

    def _enqueue(self, sock: socket.socket, address: tuple) -> None:
        self.clients.add(sock)
        self._queue.put((sock, address))

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sock, address = item
            try:
                if self.stopping:
                    self.clients.discard(sock)
                    sock.close()
                else:
                    self.serve_client(sock, address, self.clients)  # closes the socket
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
