"""The timed TCP client of the chat protocol: every call is timed and reported to Locust.

Follows Locust's recipe for other protocols (its custom XML-RPC client): a
wrapper on a plain ``socket`` (gevent makes it cooperative) that times each call
with ``perf_counter_ns`` and fires the ``request`` event. Request names:
``connect``, ``message`` (send until the ``-`` is read) and ``session`` (connect
until the server closed after ``--quit--``). Every latency also goes, as an int
of µs, into the run's per-second buffers (:mod:`harness.user.recorder`).

The per-message loop (:meth:`TcpClient.messages`) is the hot path: no socket
timeout (gevent would arm a timer per wait); the run's watchdog expires
clients whose reply is late.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from time import perf_counter_ns
from typing import TYPE_CHECKING

import gevent

from harness.user.failures import ClosedByServer, ReplyTimeout, TcpFailure, UnexpectedReply, classify
from harness.user.pacing import Pacer
from harness.user.stats import StatsReporter
from server.protocol import MAX_MESSAGE, QUIT, REPLY

if TYPE_CHECKING:
    from harness.user.plugin import Run

LOG = logging.getLogger("swarmbench")
REQUEST_TYPE = "tcp"


class TcpClient:
    """One connection at a time to the chat server; every call is timed and reported."""

    def __init__(
        self,
        run: Run,
        stats: StatsReporter,
        family: socket.AddressFamily,
        address: tuple[str, int],
        *,
        connect_timeout: float,
        reply_timeout: float,
        quit_timeout: float,
        source_addresses: int,
        users: int,
    ) -> None:
        self.family = family
        self.address = address
        self.stats = stats
        self.run = run
        self.watchdog = run.watchdog
        self.connect_timeout = connect_timeout
        self.sources = run.source_pool(address[0], source_addresses, users)
        self.quit_timeout = quit_timeout
        self.reply_timeout_ns = int(reply_timeout * 1e9)
        self.sock: socket.socket | None = None
        self.busy = 0  # perf_counter_ns of the message in flight (the watchdog reads it)
        self.expired = False
        self.session_start = 0
        self.recorder = recorder = run.recorder
        self.rec_connect = recorder.buffer("connect").append
        self.rec_message = recorder.buffer("message").append
        self.rec_session = recorder.buffer("session").append
        self.rec_uncorrected = recorder.buffer("message_uncorrected").append
        self.rec_send_lag = recorder.buffer("send_lag").append

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def _failure(self, name: str, start: int, exc: TcpFailure) -> None:
        self.stats.failure(name, start, exc)
        self.recorder.fail(name, exc.__class__.__name__)

    def connect(self) -> bool:
        """One connect attempt; a failure is reported, never raised.

        Out of ephemeral ports (EADDRNOTAVAIL: nothing was sent) an automatic
        source pool grows and the connect is retried at once, unreported.
        """
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sources = self.sources
        seen = sources.size
        start = perf_counter_ns()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sources.bind(sock)
            sock.settimeout(self.connect_timeout)
            sock.connect(self.address)
            sock.settimeout(None)  # the message path runs without a timer; see Watchdog
        except OSError as exc:
            sock.close()
            before = sources.size
            if exc.errno == errno.EADDRNOTAVAIL and sources.grow(seen):
                if sources.size > before:
                    LOG.warning("Swarmbench: out of ephemeral ports; now %d source addresses", sources.size)
                return self.connect()
            self._failure("connect", start, classify(exc, connecting=True))
            return False
        except BaseException:
            sock.close()
            raise
        end = perf_counter_ns()
        self.stats.ok("connect", end - start, 0)
        self.rec_connect((end - start) // 1000)
        self.sock, self.session_start, self.expired = sock, start, False
        self.watchdog.add(self)
        return True

    def messages(self, count: int, data: bytes, pacer: Pacer | None = None, think: float = 0.0) -> bool:
        """``count`` messages, each waiting for its ``-``; False when the session broke.

        Closed loop (no ``pacer``): each message is sent when the previous reply
        is in (after ``think`` seconds). Open loop: each is sent on ``pacer``'s
        schedule and its latency counts from when it was due (the closed loop is
        the case where it is due when it is sent). The time from a reply's
        arrival to this greenlet running again is inside ``message``; the
        process's ``loop_lag`` histogram shows how much of it the generator adds.
        """
        sock = self.sock
        if sock is None:
            return False
        send, recv, ok, rec_message = sock.send, sock.recv, self.stats.ok, self.rec_message
        rec_uncorrected, rec_lag = self.rec_uncorrected, self.rec_send_lag
        size, clock, sleep = len(data), perf_counter_ns, gevent.sleep
        for _ in range(count):
            if pacer is None:
                t0 = intended = clock()
            else:
                intended = pacer.next_ns
                pacer.next_ns = intended + pacer.interval_ns
                now = clock()
                if now < intended:
                    sleep((intended - now) / 1e9)
                t0 = clock()
            self.busy = t0
            try:
                sent = send(data)
                if sent != size:
                    sock.sendall(data[sent:])
                reply = recv(MAX_MESSAGE)
            except OSError as exc:
                self._broken(intended, classify(exc))
                return False
            t1 = clock()
            self.busy = 0
            if reply != REPLY:
                self._broken(intended, self._bad_reply(reply))
                return False
            ok("message", t1 - intended)
            rec_message((t1 - intended) // 1000)
            if pacer is not None:
                rec_uncorrected((t1 - t0) // 1000)
                rec_lag((t0 - intended) // 1000 if t0 > intended else 0)
            elif think:
                sleep(think)
        return True

    def _bad_reply(self, reply: bytes) -> TcpFailure:
        if reply:
            return UnexpectedReply(f"a reply other than '-' ({len(reply)} bytes)")
        return ReplyTimeout() if self.expired else ClosedByServer()

    def expire(self) -> None:
        """The watchdog's call: the reply is late. The waiting ``recv`` wakes (EBADF) and reports a ReplyTimeout."""
        sock = self.sock
        if sock is None:
            return
        self.expired = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _broken(self, start: int, exc: TcpFailure) -> None:
        """A message failed: report it and the session, and drop the connection."""
        self.busy = 0
        if self.expired:  # the watchdog's shutdown, whatever errno gevent raised for it
            exc = ReplyTimeout()
        self._failure("message", start, exc)
        self._failure("session", self.session_start, exc)
        self.close()

    def quit(self) -> bool:
        """Send ``--quit--`` and wait until the server closes; report the session."""
        sock = self._detach()
        if sock is None:
            return False
        try:
            sock.settimeout(self.quit_timeout)
            sock.sendall(QUIT)
            while sock.recv(MAX_MESSAGE):  # drain a '-' left by an interrupted message
                pass
        except OSError as exc:
            sock.close()
            self._failure("session", self.session_start, classify(exc))
            return False
        end = perf_counter_ns()
        sock.close()
        self.stats.ok("session", end - self.session_start, 0)
        self.rec_session((end - self.session_start) // 1000)
        return True

    def _detach(self) -> socket.socket | None:
        sock, self.sock = self.sock, None
        self.watchdog.discard(self)
        return sock

    def close(self) -> None:
        """Leave without ``--quit--`` (FIN): the server sees the peer close."""
        sock = self._detach()
        if sock is not None:
            sock.close()

    def reset(self) -> None:
        """Leave with a reset (SO_LINGER 0 -> RST): the server sees ECONNRESET."""
        sock = self._detach()
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            sock.close()
