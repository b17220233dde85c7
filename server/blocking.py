"""What the thread-based designs share, as ``socketserver`` keeps it in ``ThreadingMixIn``.

The thread-per-connection reference and the thread pool both accept in one
thread and serve each client to its end on a blocking socket in another. The
event-driven designs need none of this: :mod:`server.base` keeps only the
contract every design fulfils.
"""

from __future__ import annotations

import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable

from server.base import ACCEPT_PAUSE, HANDSHAKE_TIMEOUT, BaseServer, ServerOptions, Session, format_address, handshake_failed
from server.protocol import REPLY


def serve_blocking(sock: socket.socket, session: Session, recv_size: int, idle_timeout: float | None = None) -> None:
    """Serve one connection on a blocking socket until quit, close, error or idle timeout.

    The caller closes the socket (and set its timeout to ``idle_timeout``).
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
    except TimeoutError:
        session.idle(idle_timeout or 0.0)
    except OSError as exc:  # reset, broken pipe, or the socket shut down for exit
        session.reset(exc)
    session.closed()


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer sends something (or closes) within ``timeout`` seconds; reads nothing.

    ``timeout`` 0 or less only asks whether it already has: a connection that
    waited that long in a queue costs its worker no read timeout.
    """
    sock.settimeout(max(timeout, 0.0))  # 0: non-blocking, BlockingIOError when nothing is there
    try:
        sock.recv(1, socket.MSG_PEEK)
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:  # a reset: the session's first read meets it and says so
        return True
    return True


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

    def replace(self, old: socket.socket, new: socket.socket) -> None:
        """``new`` took over ``old``'s descriptor (a TLS wrap)."""
        with self._lock:
            self._socks.discard(old)
            self._socks.add(new)

    def shutdown_all(self) -> None:
        """Shut every client socket down; its thread then sees EOF and exits."""
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass

    def __len__(self) -> int:
        return len(self._socks)


class BlockingServer(BaseServer):
    """A server whose clients each get a thread and a blocking socket: an accept loop and a client's life."""

    def __init__(self, options: ServerOptions) -> None:
        super().__init__(options)
        #: Every client socket accepted and not yet closed (queued ones too): shutdown closes them.
        self.clients = ClientRegistry()

    def accept_loop(self, handle: Callable[[socket.socket, tuple], None]) -> None:
        """Wait for connections (or shutdown) and pass each to ``handle``.

        In the main thread, signals also write to the wake-up channel
        (``signal.set_wakeup_fd``): the kernel may deliver SIGTERM to any thread,
        say a pool worker blocked on its queue; Python then runs the handler only
        when the main thread next runs, and it would sit in ``select()`` for good.
        """
        sel = selectors.DefaultSelector()
        assert self.listener is not None
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self.wake_socket, selectors.EVENT_READ)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.set_wakeup_fd(self.wake_writer.fileno(), warn_on_full_buffer=False) if main else -1
        try:
            while not self.stopping:
                sel.select()
                if self.stopping:
                    break
                for sock, address in self.accept_ready():
                    handle(sock, address)
                if self.starved:  # this thread only accepts: pausing it stalls no client
                    self.wait_wake(ACCEPT_PAUSE)
        finally:
            if main:
                signal.set_wakeup_fd(previous)  # before close() closes the channel
            sel.close()

    def serve_client(self, sock: socket.socket, address: tuple, accepted: float | None = None) -> None:
        """A blocking client's whole life in its thread: TLS handshake, idle timeout, session.

        The handshake runs here, not in the accept loop: a slow or hostile
        client must not hold up the others. ``accepted`` (``time.monotonic()``)
        is when a queued connection was accepted: its time in the queue counts,
        as in a design that reads at once. Its first bytes (a message, or a TLS
        hello) must come within the idle timeout (the handshake's limit) of
        that moment: a worker waits only for what is left of it, none if it
        ran out in the queue. Once they have come, the client is served as one
        taken at once. Closes the socket.
        """
        opts = self.options
        peer = format_address(address)
        idle = opts.idle_timeout
        handshake = min(HANDSHAKE_TIMEOUT, idle or HANDSHAKE_TIMEOUT) if opts.tls is not None else None
        first = handshake or idle  # how long after its accept a client may stay silent
        try:
            sock.setblocking(True)
            silent = (
                accepted is not None and first is not None
                and not wait_readable(sock, accepted + first - time.monotonic())
            )  # fmt: skip
            if opts.tls is not None:
                if silent:
                    handshake_failed(peer, TimeoutError())
                    return
                tls = opts.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                self.clients.replace(sock, tls)
                sock = tls
                sock.settimeout(handshake)  # the whole handshake's limit (Python 3.5+), not each read's
                try:
                    tls.do_handshake()
                except (OSError, ValueError) as exc:  # SSLError, reset, timeout; ValueError: closed at shutdown
                    handshake_failed(peer, exc)
                    return
            session = self.session_class(peer, opts.recv_size)
            if silent:
                session.idle(idle or 0.0)
                session.closed()
                return
            sock.settimeout(idle)
            serve_blocking(sock, session, opts.recv_size, idle)
        finally:
            self.clients.discard(sock)
            sock.close()
