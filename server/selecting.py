"""One thread, non-blocking sockets and the ``selectors`` module (a readiness loop).

Every reply is the same byte, so a connection's pending output is a count,
not a buffer: when a send is partial the rest is owed, the socket is watched
for write only (no more reads until it drains: back-pressure), and a session
that ends with replies owed is closed once they are sent.

Housekeeping that is not per message (resuming accepts after running out of
descriptors, closing idle connections) runs between select() calls, and only
when due: select()'s timeout is the time to the next such task.
"""

from __future__ import annotations

import selectors
import socket
import time

from server.base import ACCEPT_PAUSE, BaseServer, ServerOptions, Session, format_address
from server.protocol import REPLY

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Connection:
    """A client socket, its session, the replies it is still owed, and when it last sent."""

    __slots__ = ("sock", "session", "owed", "writing", "closing", "last")

    def __init__(self, sock: socket.socket, session: Session, now: float) -> None:
        self.sock = sock
        self.session = session
        self.owed = 0
        self.writing = False
        self.closing = False
        self.last = now


class SelectorServer(BaseServer):
    """A single-threaded readiness loop over every connection."""

    name = "selectors"
    description = "one thread, non-blocking sockets, the selectors module"

    def __init__(self, options: ServerOptions) -> None:
        if options.tls is not None:
            raise ValueError("selectors does not serve TLS (no non-blocking handshake); use threaded, pool, asyncio or prefork")
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
        idle = self.options.idle_timeout
        if idle:
            self.now = time.monotonic()
            self._next_sweep = self.now + idle / 4
        timeout: float | None = idle / 4 if idle else None
        while not self.stopping:
            events = sel.select(timeout)
            if idle:  # once per wake-up, not per message: what each read stamps on its connection
                self.now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if conn is not None:
                    if mask & EVENT_READ:
                        self._readable(conn, recv_size)
                    else:
                        self._writable(conn)
                elif key.fileobj is listener:
                    self._accept()
                # else: the wake socket; the loop condition sees ``stopping``
            if idle or self._resume_accepts:
                timeout = self._housekeeping(idle)

    def _housekeeping(self, idle: float | None) -> float | None:
        """Resume accepts and close idle connections when due; return select()'s next timeout."""
        now = self.now = time.monotonic()
        due: list[float] = []
        if self._resume_accepts:
            if now >= self._resume_accepts:
                self._resume_accepts = 0.0
                assert self.listener is not None
                self.sel.register(self.listener, EVENT_READ)
            else:
                due.append(self._resume_accepts)
        if idle:
            if now >= self._next_sweep:
                self._next_sweep = now + idle / 4
                limit = now - idle
                for conn in [c for c in self.conns.values() if c.last < limit and not c.writing]:
                    conn.session.idle(idle)
                    self._drop(conn)
            due.append(self._next_sweep)
        return max(0.0, min(due) - now) if due else None

    def _accept(self) -> None:
        session_class, recv_size, now = self.session_class, self.options.recv_size, self.now
        for sock, address in self.accept_ready():
            sock.setblocking(False)
            conn = Connection(sock, session_class(format_address(address), recv_size), now)
            self.conns[sock] = conn
            self.sel.register(sock, EVENT_READ, conn)
        if self.starved:  # out of descriptors: stop watching the listener for a moment, keep serving
            assert self.listener is not None
            self.sel.unregister(self.listener)
            self._resume_accepts = time.monotonic() + ACCEPT_PAUSE

    def _readable(self, conn: Connection, recv_size: int) -> None:
        try:
            data = conn.sock.recv(recv_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            conn.session.reset(exc)
            self._drop(conn)
            return
        conn.last = self.now
        count, close = conn.session.feed(data)
        if count:
            conn.owed += count
            if not self._send(conn):
                return
        if close:
            if conn.owed:
                conn.closing = True  # closed by _writable once the owed replies are out
            else:
                self._drop(conn)

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
        except (BlockingIOError, InterruptedError):
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
        conn.session.closed()
        conn.sock.close()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.sel.close()
        super().close()
