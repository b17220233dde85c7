"""The contract every server variant fulfils, in the manner of ``socketserver``.

A variant is a small subclass of :class:`BaseServer` that owns only its I/O and
concurrency model. Listening, TLS, idle timeouts, logging, shutdown and the
protocol's events are here, so that every variant binds, logs and answers the
same way. What only the thread-based designs share (an accept loop, a client's
life on a blocking socket) is in :mod:`server.blocking`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import select
import socket
import ssl
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
#: Out of descriptors, a variant stops accepting for this long, then tries again.
ACCEPT_PAUSE = 0.1
#: A TLS client has this long to finish its handshake (unless --idle-timeout is shorter).
HANDSHAKE_TIMEOUT = 10.0

#: Control characters (C0, DEL, C1, line/paragraph separators) -> a visible escape.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL.update({0x2028: "\\u2028", 0x2029: "\\u2029", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})


def escape(text: str) -> str:
    """Client text made safe for a log line: a client must not forge lines or colours."""
    return text if text.isprintable() else text.translate(_CONTROL)


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What every variant accepts on its command line."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    backlog: int = DEFAULT_BACKLOG
    recv_size: int = MAX_MESSAGE
    #: Close a connection that sends nothing for this many seconds (None: never, as the tutorial).
    idle_timeout: float | None = None
    #: Serve TLS with this context (None: plain TCP, as the tutorial).
    tls: ssl.SSLContext | None = None


def format_address(address: tuple) -> str:
    """``127.0.0.1:8000`` or ``[::1]:8000``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_listener(host: str, port: int, backlog: int, reuse_port: bool = False) -> socket.socket:
    """A bound, listening, non-blocking socket: the one way every variant (and prefork's workers) listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Session:
    """One connection's protocol state and log lines, shared by all variants.

    :meth:`feed` is the per-message path: it logs only when INFO is enabled
    (checked once per connection) and returns what the caller must send.
    """

    __slots__ = ("conn", "peer", "verbose", "warned")

    def __init__(self, peer: str, max_message: int = MAX_MESSAGE) -> None:
        self.conn = ServerConnection(max_message)
        self.peer = peer
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
                    CONN_LOG.info("Processed result: %s", escape(event.result))
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
        return replies, False

    def reset(self, exc: BaseException) -> None:
        """The peer reset the connection or a send failed."""
        if self.verbose:
            CONN_LOG.info("Connection %s lost: %s", self.peer, exc.__class__.__name__)

    def idle(self, timeout: float) -> None:
        """The server closes a connection that sent nothing for ``timeout`` seconds."""
        if self.verbose:
            CONN_LOG.info("Connection %s idle for %g s: closing it", self.peer, timeout)

    def closed(self) -> None:
        if self.verbose:
            CONN_LOG.info("Connection %s closed", self.peer)


def handshake_failed(peer: str, exc: BaseException) -> None:
    """One line per failed TLS handshake (a scanner or a wrong CA must not cost a traceback)."""
    reason = getattr(exc, "reason", None) or exc.__class__.__name__
    LOG.warning("TLS handshake with %s failed: %s", peer, reason)


class BaseServer:
    """One listening socket, a wake-up channel for shutdown, and the log lines.

    Subclasses implement :meth:`serve` (run until ``self.stopping``) and may add
    command-line options in :meth:`add_arguments`.
    """

    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    #: Prefork children share one port.
    reuse_port: ClassVar[bool] = False
    #: What each connection's protocol state is (a test server swaps in a slower one).
    session_class: ClassVar[type[Session]] = Session

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.stopping = False
        self.listener: socket.socket | None = None
        #: True from the first accept() that ran out of descriptors to the next that succeeds.
        self.starved = False
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
        LOG.info("Socket created")
        try:
            sock = make_listener(opts.host, opts.port, opts.backlog, self.reuse_port)
        except OSError as exc:
            raise BindError(f"Bind failed. Error : {exc.strerror or exc} ({opts.host}:{opts.port})") from None
        LOG.info("Socket now listening")
        tls = ", tls" if opts.tls is not None else ""
        LOG.info("Serving on %s (%s, backlog %d%s)", format_address(sock.getsockname()), self.name, opts.backlog, tls)
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

    # -- running out of descriptors: one line per episode -------------------------
    def out_of_descriptors(self, exc: OSError) -> None:
        """accept() failed for want of a resource: log the first time only, until it recovers."""
        if not self.starved:
            self.starved = True
            LOG.warning(
                "Out of file descriptors: accept() failed: %s; pausing accepts, serving the clients held",
                exc.strerror or exc,
            )

    def recovered(self) -> None:
        """An accept succeeded after an episode of running out: say so once."""
        if self.starved:
            self.starved = False
            LOG.warning("File descriptors available again: accepting connections")

    # -- helpers for variants -------------------------------------------------
    def accept_ready(self) -> list[tuple[socket.socket, tuple]]:
        """Accept every connection waiting in the queue (the listener is non-blocking).

        Out of file descriptors (EMFILE and kin), it returns what it has with
        ``self.starved`` set: the caller pauses accepting for ACCEPT_PAUSE.
        """
        accepted: list[tuple[socket.socket, tuple]] = []
        assert self.listener is not None
        accept = self.listener.accept
        while True:
            try:
                accepted.append(accept())
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self.out_of_descriptors(exc)
                    return accepted
                raise
        if accepted and self.starved:
            self.recovered()
        return accepted

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

    @property
    def wake_writer(self) -> socket.socket:
        """The channel's other end: a byte written here wakes whoever waits on :attr:`wake_socket`."""
        return self._wake_w


class BindError(Exception):
    """The address could not be bound; the message is the one-line error."""
