"""The contract every server variant fulfils, in the manner of ``socketserver``.

A variant is a small subclass of :class:`BaseServer` that owns only its I/O and
concurrency model. Listening, logging, shutdown and the protocol's events are
here, so that every variant binds, logs and answers the same way.
"""

from __future__ import annotations

import argparse
import errno
import logging
import select
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from server.protocol import (
    DEFAULT_BACKLOG,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_MESSAGE,
    Message,
    Oversized,
    PeerClosed,
    Quit,
    ServerConnection,
    Undecodable,
)

#: Lifecycle lines (created, listening, serving on, stopping): always shown.
LOG = logging.getLogger("server")
#: Per-connection and per-message lines: at the level ``--log-level`` sets.
CONN_LOG = logging.getLogger("server.conn")

#: accept() errors that mean "out of a resource", not "this listener is broken".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What every variant accepts on its command line."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    backlog: int = DEFAULT_BACKLOG
    recv_size: int = MAX_MESSAGE
    #: Test-only: seconds to sleep before each reply (to slow a variant on purpose).
    delay: float = 0.0


def format_address(address: tuple) -> str:
    """``127.0.0.1:8000`` or ``[::1]:8000``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Session:
    """One connection's protocol state and log lines, shared by all variants.

    :meth:`feed` is the per-message path: it logs only when INFO is enabled
    (checked once per connection) and returns what the caller must send.
    """

    __slots__ = ("conn", "peer", "verbose", "delay", "warned")

    def __init__(self, peer: str, delay: float = 0.0, max_message: int = MAX_MESSAGE) -> None:
        self.conn = ServerConnection(max_message)
        self.peer = peer
        self.delay = delay
        self.warned = False
        self.verbose = CONN_LOG.isEnabledFor(logging.INFO)
        if self.verbose:
            CONN_LOG.info("Connected with %s", peer)

    def feed(self, data: bytes) -> tuple[int, bool]:
        """Return (number of ``-`` replies to send, whether to close now)."""
        replies = 0
        for event in self.conn.receive_data(data):
            kind = event.__class__
            if kind is Message:
                if self.verbose:
                    CONN_LOG.info("Processing the input received from client")
                    CONN_LOG.info("Processed result: %s", event.result)
                replies += 1
            elif kind is Quit:
                if self.verbose:
                    CONN_LOG.info("Processing the input received from client")
                    CONN_LOG.info("Client is requesting to quit")
                return replies, True
            elif kind is PeerClosed:
                return replies, True
            elif kind is Oversized:
                if not self.warned:  # once a connection: a client of 5120-byte messages would flood the log
                    self.warned = True
                    CONN_LOG.warning(
                        "The input size is greater than expected %d (from %s): the message may be cut",
                        event.size,
                        self.peer,
                    )
            elif kind is Undecodable:
                CONN_LOG.warning("Invalid UTF-8 from %s (%s): answered, not processed", self.peer, event.reason)
                replies += 1
        if self.delay:
            time.sleep(self.delay)
        return replies, False

    def reset(self, exc: BaseException) -> None:
        """The peer reset the connection or a send failed."""
        if self.verbose:
            CONN_LOG.info("Connection %s lost: %s", self.peer, exc.__class__.__name__)

    def closed(self) -> None:
        if self.verbose:
            CONN_LOG.info("Connection %s closed", self.peer)


class BaseServer:
    """One listening socket, a wake-up channel for shutdown, and the log lines.

    Subclasses implement :meth:`serve` (run until ``self.stopping``) and may add
    command-line options in :meth:`add_arguments`.
    """

    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    #: Prefork children share one port.
    reuse_port: ClassVar[bool] = False

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.stopping = False
        self.listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the variant's own options (none by default)."""

    # -- lifecycle ---------------------------------------------------------
    def open(self) -> socket.socket:
        """Create, bind and listen, logging the tutorial's lines and the address bound."""
        opts = self.options
        family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        LOG.info("Socket created")
        try:
            sock.bind((opts.host, opts.port))
        except OSError as exc:
            sock.close()
            raise BindError(f"Bind failed. Error : {exc.strerror or exc} ({opts.host}:{opts.port})") from None
        sock.listen(opts.backlog)
        sock.setblocking(False)
        LOG.info("Socket now listening")
        LOG.info(
            "Serving on %s (%s, backlog %d)", format_address(sock.getsockname()), self.name, opts.backlog
        )
        self.listener = sock
        return sock

    def serve_forever(self) -> None:
        """Open (unless already open), serve until :meth:`shutdown`, then clean up."""
        if self.listener is None:
            self.open()
        try:
            self.serve()
        finally:
            self.close()
            LOG.info("Server stopped")

    def serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def shutdown(self) -> None:
        """Ask the server to stop; safe from a signal handler or another thread."""
        self.stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def close(self) -> None:
        """Close the listener and the wake-up channel; subclasses close clients first."""
        if self.listener is not None:
            self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- helpers for variants -------------------------------------------------
    def accept_ready(self) -> list[tuple[socket.socket, tuple]]:
        """Accept every connection waiting in the queue (the listener is non-blocking).

        Out of file descriptors (EMFILE and kin), it logs once, waits 100 ms and
        returns what it has: the server keeps serving the clients it holds.
        """
        accepted: list[tuple[socket.socket, tuple]] = []
        assert self.listener is not None
        while True:
            try:
                accepted.append(self.listener.accept())
            except (BlockingIOError, InterruptedError):
                return accepted
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    LOG.warning("accept() failed: %s; retrying in 100 ms", exc.strerror)
                    self.wait_wake(0.1)
                    return accepted
                raise

    def accept_loop(self, handle: Callable[[socket.socket, tuple], None]) -> None:
        """Wait for connections (or shutdown) and pass each to ``handle``: the thread-based designs' loop."""
        sel = selectors.DefaultSelector()
        assert self.listener is not None
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self.wake_socket, selectors.EVENT_READ)
        try:
            while not self.stopping:
                sel.select()
                if self.stopping:
                    break
                for sock, address in self.accept_ready():
                    handle(sock, address)
        finally:
            sel.close()

    def wait_wake(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, waking at once on shutdown.

        Uses poll(), which needs no file descriptor: this runs when none are left.
        """
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.poll(timeout * 1000.0)

    @property
    def wake_socket(self) -> socket.socket:
        """Readable once :meth:`shutdown` has been called."""
        return self._wake_r


class BindError(Exception):
    """The address could not be bound; the message is the one-line error."""
