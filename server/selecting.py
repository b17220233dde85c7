"""One thread, non-blocking sockets and the ``selectors`` module (a readiness loop).

Every reply is the same byte, so a connection's pending output is a count,
not a buffer: when a send is partial the rest is owed, the socket is watched
for write only (no more reads until it drains: back-pressure), and a session
that ends with replies owed is closed once they are sent.

Housekeeping that is not per message (resuming accepts after running out of
descriptors, closing idle connections and stalled TLS handshakes) runs between
select() calls, and only when due: select()'s timeout is the time to the next
such task.

TLS (``--tls-cert``): the handshake is non-blocking too, a state of its own (a
connection with no session yet) driven by whichever readiness it asked for.
The TLS path's read and write methods, chosen once in ``serve``, step the
handshake and then use plain TCP's (reading on while the SSL layer holds
data), so plain TCP's per-message path has no TLS test in it.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time

from server.base import (
    ACCEPT_PAUSE,
    HANDSHAKE_TIMEOUT,
    BaseServer,
    ServerOptions,
    Session,
    format_address,
    handshake_failed,
)
from server.protocol import REPLY

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Connection:
    """A client socket, its session (None while its TLS handshake runs), the replies it is still
    owed, and when it last sent (or, handshaking, when it was accepted)."""

    __slots__ = ("sock", "session", "owed", "writing", "closing", "last", "peer")

    def __init__(self, sock: socket.socket, session: Session | None, now: float, peer: str = "") -> None:
        self.sock = sock
        self.session = session
        self.peer = peer
        self.owed = 0
        self.writing = False
        self.closing = False
        self.last = now


class SelectorServer(BaseServer):
    """A single-threaded readiness loop over every connection."""

    name = "selectors"
    description = "one thread, non-blocking sockets, the selectors module"

    def __init__(self, options: ServerOptions) -> None:
        super().__init__(options)
        self.sel = selectors.DefaultSelector()
        self.conns: dict[socket.socket, Connection] = {}
        #: The loop's clock, read once per select() when idle timeouts are on (0 otherwise).
        self.now = 0.0
        self._resume_accepts = 0.0  # when a paused listener is watched again (0: not paused)
        self._next_sweep = 0.0

    def serve(self) -> None:
        sel = self.sel
        assert self.listener is not None
        listener, wake = self.listener, self.wake_socket
        sel.register(listener, EVENT_READ)
        sel.register(wake, EVENT_READ)
        recv_size = self.options.recv_size
        tls = self.options.tls is not None
        readable = self._readable_tls if tls else self._readable
        writable = self._writable_tls if tls else self._writable
        # A sweep every quarter of the shortest limit: idle connections, stalled handshakes.
        limits = [t for t in (self.options.idle_timeout, self.handshake_limit) if t]
        period = min(limits) / 4 if limits else None
        if period:
            self.now = time.monotonic()
            self._next_sweep = self.now + period
        timeout: float | None = period
        while not self.stopping:
            events = sel.select(timeout)
            if period:  # once per wake-up, not per message: what each read stamps on its connection
                self.now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if conn is not None:
                    if mask & EVENT_READ:
                        readable(conn, recv_size)
                    else:
                        writable(conn)
                elif key.fileobj is listener:
                    self._accept()
                # else: the wake socket; the loop condition sees ``stopping``
            if period or self._resume_accepts:
                timeout = self._housekeeping(period)

    @property
    def handshake_limit(self) -> float | None:
        """How long a TLS client may take over its handshake (None: no TLS)."""
        if self.options.tls is None:
            return None
        return min(HANDSHAKE_TIMEOUT, self.options.idle_timeout or HANDSHAKE_TIMEOUT)

    def _housekeeping(self, period: float | None) -> float | None:
        """Resume accepts, close idle connections and stalled handshakes when due; return select()'s next timeout."""
        now = self.now = time.monotonic()
        due: list[float] = []
        if self._resume_accepts:
            if now >= self._resume_accepts:
                self._resume_accepts = 0.0
                assert self.listener is not None
                self.sel.register(self.listener, EVENT_READ)
            else:
                due.append(self._resume_accepts)
        if period:
            if now >= self._next_sweep:
                self._next_sweep = now + period
                self._sweep(now)
            due.append(self._next_sweep)
        return max(0.0, min(due) - now) if due else None

    def _sweep(self, now: float) -> None:
        idle, handshake = self.options.idle_timeout, self.handshake_limit
        for conn in list(self.conns.values()):
            if conn.session is None:
                if handshake and conn.last < now - handshake:
                    handshake_failed(conn.peer, TimeoutError())
                    self._drop(conn)
            elif idle and conn.last < now - idle and not conn.writing:
                conn.session.idle(idle)
                self._drop(conn)

    def _accept(self) -> None:
        session_class, recv_size, now, tls = self.session_class, self.options.recv_size, self.now, self.options.tls
        for sock, address in self.accept_ready():
            sock.setblocking(False)
            if tls is not None:
                self._start_tls(tls, sock, format_address(address))
                continue
            conn = Connection(sock, session_class(format_address(address), recv_size), now)
            self.conns[sock] = conn
            self.sel.register(sock, EVENT_READ, conn)
        if self.starved:  # out of descriptors: stop watching the listener for a moment, keep serving
            assert self.listener is not None
            self.sel.unregister(self.listener)
            self._resume_accepts = time.monotonic() + ACCEPT_PAUSE

    def _readable(self, conn: Connection, recv_size: int) -> bool:
        """Read once, answer, close if asked; return whether the connection may read on.

        TLS reads through here too (the SSL exceptions cost nothing until raised).
        """
        try:
            data = conn.sock.recv(recv_size)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (OSError, ValueError) as exc:
            conn.session.reset(exc)
            self._drop(conn)
            return False
        conn.last = self.now
        count, close = conn.session.feed(data)
        if count:
            conn.owed += count
            if not self._send(conn):
                return False
        if close:
            if conn.owed:
                conn.closing = True  # closed by _writable once the owed replies are out
            else:
                self._drop(conn)
            return False
        return True

    # -- TLS ---------------------------------------------------------------------------
    def _start_tls(self, context: ssl.SSLContext, sock: socket.socket, peer: str) -> None:
        try:
            tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:  # the peer is already gone
            handshake_failed(peer, exc)
            sock.close()
            return
        conn = Connection(tls, None, self.now, peer)
        self.conns[tls] = conn
        self.sel.register(tls, EVENT_READ, conn)
        self._handshake(conn)

    def _handshake(self, conn: Connection) -> None:
        """One step of a non-blocking handshake; once done, the connection gets its session."""
        sock = conn.sock
        try:
            sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self.sel.modify(sock, EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.sel.modify(sock, EVENT_WRITE, conn)
            return
        except (OSError, ValueError) as exc:  # SSLError, reset
            handshake_failed(conn.peer, exc)
            self._drop(conn)
            return
        conn.session = self.session_class(conn.peer, self.options.recv_size)
        conn.last = self.now
        self.sel.modify(sock, EVENT_READ, conn)
        self._readable_tls(conn, self.options.recv_size)  # data may have come with the handshake's end

    def _readable_tls(self, conn: Connection, recv_size: int) -> None:
        """Handshake, or read; a TLS record can hold more than one read: read on while the SSL layer has some."""
        if conn.session is None:
            self._handshake(conn)
            return
        sock = conn.sock
        while self._readable(conn, recv_size) and not conn.writing and sock.pending():  # type: ignore[attr-defined]
            pass

    def _writable_tls(self, conn: Connection) -> None:
        if conn.session is None:
            self._handshake(conn)
        else:
            self._writable(conn)

    def _writable(self, conn: Connection) -> None:
        if self._send(conn) and conn.closing and not conn.owed:
            self._drop(conn)

    def _send(self, conn: Connection) -> bool:
        """Send what is owed; while some is left, watch for write instead of read.

        Returns False if the connection failed and was dropped.
        """
        owed = conn.owed
        try:
            sent = conn.sock.send(REPLY if owed == 1 else REPLY * owed)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as exc:
            conn.session.reset(exc)
            self._drop(conn)
            return False
        conn.owed = owed = owed - sent
        if owed:
            if not conn.writing:
                conn.writing = True
                self.sel.modify(conn.sock, EVENT_WRITE, conn)
        elif conn.writing:
            conn.writing = False
            self.sel.modify(conn.sock, EVENT_READ, conn)
        return True

    def _drop(self, conn: Connection) -> None:
        self.sel.unregister(conn.sock)
        del self.conns[conn.sock]
        if conn.session is not None:
            conn.session.closed()
        conn.sock.close()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.sel.close()
        super().close()
