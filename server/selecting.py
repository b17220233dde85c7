"""One thread, non-blocking sockets and the ``selectors`` module (a readiness loop).

Every reply is the same byte, so a connection's pending output is a count,
not a buffer: when a send is partial the rest is owed, the socket is watched
for write only (no more reads until it drains: back-pressure), and a session
that ends with replies owed is closed once they are sent.
"""

from __future__ import annotations

import selectors
import socket

from server.base import BaseServer, ServerOptions, Session, format_address
from server.protocol import REPLY

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Connection:
    """A client socket, its session, and the replies it is still owed."""

    __slots__ = ("sock", "session", "owed", "writing", "closing")

    def __init__(self, sock: socket.socket, session: Session) -> None:
        self.sock = sock
        self.session = session
        self.owed = 0
        self.writing = False
        self.closing = False


class SelectorServer(BaseServer):
    """A single-threaded readiness loop over every connection."""

    name = "selectors"
    description = "one thread, non-blocking sockets, the selectors module"

    def __init__(self, options: ServerOptions) -> None:
        super().__init__(options)
        self.sel = selectors.DefaultSelector()
        self.conns: dict[socket.socket, Connection] = {}

    def serve(self) -> None:
        sel = self.sel
        assert self.listener is not None
        listener, wake = self.listener, self.wake_socket
        sel.register(listener, EVENT_READ)
        sel.register(wake, EVENT_READ)
        recv_size = self.options.recv_size
        while not self.stopping:
            for key, mask in sel.select():
                conn = key.data
                if conn is not None:
                    if mask & EVENT_READ:
                        self._readable(conn, recv_size)
                    else:
                        self._writable(conn)
                elif key.fileobj is listener:
                    self._accept()
                # else: the wake socket; the loop condition sees ``stopping``

    def _accept(self) -> None:
        delay = self.options.delay
        for sock, address in self.accept_ready():
            sock.setblocking(False)
            conn = Connection(sock, Session(format_address(address), delay))
            self.conns[sock] = conn
            self.sel.register(sock, EVENT_READ, conn)

    def _readable(self, conn: Connection, recv_size: int) -> None:
        try:
            data = conn.sock.recv(recv_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            conn.session.reset(exc)
            self._drop(conn)
            return
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
