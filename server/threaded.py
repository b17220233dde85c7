"""The reference: the tutorial's thread-per-connection server, its crash bugs fixed.

Kept faithful on purpose (one accept loop, one new thread per connection,
``listen(6)``, ``recv(5120)``): it is the baseline every other design is
measured against. Fixed: an empty ``recv`` (close or half-close) ends the
session instead of spinning; resets, invalid UTF-8 and oversized input no
longer kill the thread without closing its socket; SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import socket
import threading
import time

from server.base import LOG
from server.blocking import BlockingServer


class ThreadedServer(BlockingServer):
    """One thread per connection, created on accept (the tutorial's design)."""

    name = "threaded"
    description = "the reference: a new thread per connection (the tutorial's design)"

    def serve(self) -> None:
        self.accept_loop(self.start_client)

    def start_client(self, sock: socket.socket, address: tuple) -> None:
        self.clients.add(sock)
        try:
            thread = threading.Thread(target=self.serve_client, args=(sock, address), daemon=True)
            thread.start()
        except RuntimeError as exc:  # can't start new thread: one line, not a traceback per client
            LOG.error("Thread did not start: %s (%d clients)", exc, len(self.clients))
            self.clients.discard(sock)
            sock.close()

    def close(self) -> None:
        self.clients.shutdown_all()
        deadline = time.monotonic() + 1.0
        while len(self.clients) and time.monotonic() < deadline:
            time.sleep(0.01)
        super().close()
