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

from server.base import LOG, BaseServer, ServerOptions, Session, format_address
from server.protocol import REPLY


def serve_blocking(sock: socket.socket, session: Session, recv_size: int) -> None:
    """Serve one connection on a blocking socket until quit, close or error.

    Shared by the thread-per-connection and thread-pool variants. The caller
    closes the socket.
    """
    recv = sock.recv
    sendall = sock.sendall
    try:
        while True:
            count, close = session.feed(recv(recv_size))
            if count:
                sendall(REPLY if count == 1 else REPLY * count)
            if close:
                break
    except OSError as exc:  # reset, broken pipe, or the socket shut down for exit
        session.reset(exc)
    session.closed()


class ClientRegistry:
    """The open client sockets, so that shutdown can close every one of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def shutdown_all(self) -> None:
        """Shut every client socket down; its thread then sees EOF and exits."""
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __len__(self) -> int:
        return len(self._socks)


class ThreadedServer(BaseServer):
    """One thread per connection, created on accept (the tutorial's design)."""

    name = "threaded"
    description = "the reference: a new thread per connection (the tutorial's design)"

    def __init__(self, options: ServerOptions) -> None:
        super().__init__(options)
        self.clients = ClientRegistry()

    def serve(self) -> None:
        self.accept_loop(self.start_client)

    def start_client(self, sock: socket.socket, address: tuple) -> None:
        sock.setblocking(True)
        self.clients.add(sock)
        try:
            thread = threading.Thread(
                target=self._client_thread, args=(sock, format_address(address)), daemon=True
            )
            thread.start()
        except RuntimeError as exc:  # can't start new thread: one line, not a traceback per client
            LOG.error("Thread did not start: %s (%d clients)", exc, len(self.clients))
            self.clients.discard(sock)
            sock.close()

    def _client_thread(self, sock: socket.socket, peer: str) -> None:
        try:
            serve_blocking(sock, Session(peer, self.options.delay), self.options.recv_size)
        finally:
            self.clients.discard(sock)
            sock.close()

    def close(self) -> None:
        self.clients.shutdown_all()
        deadline = time.monotonic() + 1.0
        while len(self.clients) and time.monotonic() < deadline:
            time.sleep(0.01)
        super().close()
