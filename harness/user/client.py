"""The timed TCP client: every call is timed and reported to Locust; the protocol is a profile's.

Follows Locust's recipe for other protocols (its custom XML-RPC client): a
wrapper on a plain ``socket`` (gevent makes it cooperative) that times each call
with ``perf_counter_ns`` and fires the ``request`` event. Request names:
``connect``, ``tls_handshake`` (with ``--tls``), ``message`` (send until the
whole reply is read) and ``session`` (connect until the server closed after the
profile's quit). Every latency also goes, as an int of µs, into the run's
per-second buffers (:mod:`harness.user.recorder`); successful messages reach
Locust's stats from there, once a second (:class:`harness.user.stats.LocustBatch`).

Framing is the profile's (:mod:`harness.profiles`, sans-IO). When the
profile knows the reply (chat's ``-``), a message costs one ``recv`` and one
compare; otherwise, or when they differ, :meth:`TcpClient._read_reply` reads
until the profile finds a whole reply and checks it.

The per-message loop (:meth:`TcpClient.messages`) is the hot path: no socket
timeout (gevent would arm a timer per wait); the run's watchdog expires
clients whose reply is late. On gevent's plain socket it sends on the OS socket
and waits for readable before its one ``recv`` (:mod:`harness.user.raw_socket`);
in the open loop it hands each message that is not yet due to the run's
dispatcher and waits for the reply at once (:mod:`harness.user.dispatch`).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from time import perf_counter_ns
from typing import TYPE_CHECKING

import gevent

from harness.user.alarm import sleeper
from harness.failures import ClosedByServer, ReplyTimeout, TcpFailure, UnexpectedReply, classify, escaped
from harness.user.pacing import Pacer
from harness.profiles import MAX_REPLY, ChatProfile, Profile
from harness.user.raw_socket import raw_socket
from harness.user.stats import StatsReporter
from harness.user.tls import TlsSettings, tls_failure

if TYPE_CHECKING:
    from harness.user.plugin import Run

LOG = logging.getLogger("swarmbench")
REQUEST_TYPE = "tcp"


class TcpClient:
    """One connection at a time to the server; every call is timed and reported."""

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
        profile: Profile | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.profile = profile if profile is not None else ChatProfile()
        self.tls = tls
        self.family = family
        self.address = address
        self.stats = stats
        self.run = run
        self.watchdog = run.watchdog
        self.sleep_until = sleeper(run.alarm)  # the open loop's under TLS: to within µs (see harness.user.alarm)
        # the open loop's sends on plain TCP (see harness.user.dispatch): made in the hub when due
        self.dispatch = run.dispatcher.send_at if run.dispatcher is not None and tls is None else None
        self.pending = 0  # the dispatcher's ticket of the message waiting to be sent; 0: none
        self.sent_at = 0  # perf_counter_ns when the dispatcher sent it
        self.send_error: OSError | None = None  # what the dispatcher's send raised
        self.sender: gevent.Greenlet | None = None  # sends the rest of a message the dispatcher began
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
        self.rec_tls = recorder.buffer("tls_handshake").append if tls is not None else None

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
        if self.tls is not None:
            sock = self._handshake(sock)
            if sock is None:
                return False
        self.sock, self.session_start, self.expired, self.send_error = sock, start, False, None
        self.watchdog.add(self)
        return True

    def _handshake(self, sock: socket.socket) -> socket.socket | None:
        """TLS over the connected socket, timed as ``tls_handshake``; None (reported) when it fails."""
        tls = self.tls
        assert tls is not None and self.rec_tls is not None
        start = perf_counter_ns()
        try:
            sock.settimeout(self.connect_timeout)
            wrapped = tls.context.wrap_socket(sock, server_hostname=tls.server_name or None)
            wrapped.settimeout(None)
        except OSError as exc:  # ssl.SSLError is one
            sock.close()
            self._failure("tls_handshake", start, tls_failure(exc))
            return None
        except BaseException:
            sock.close()
            raise
        end = perf_counter_ns()
        self.stats.ok("tls_handshake", end - start, 0)
        self.rec_tls((end - start) // 1000)
        return wrapped

    def messages(self, count: int, data: bytes, pacer: Pacer | None = None, think: float = 0.0) -> bool:
        """``count`` messages, each waiting for its whole reply; False when the session broke.

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
        recv, rec_message = sock.recv, self.rec_message
        raw = raw_socket(sock) if self.tls is None else None
        if raw is None:  # TLS, or not gevent's socket: its own methods, and the open loop sleeps until due
            send, raw_recv, wait, readable, dispatch = sock.send, recv, None, None, None
        else:
            send, raw_recv, wait, readable = raw
            dispatch = self.dispatch if pacer is not None else None
        rec_uncorrected, rec_lag = self.rec_uncorrected, self.rec_send_lag
        size, clock, sleep, sleep_until = len(data), perf_counter_ns, gevent.sleep, self.sleep_until
        stats = self.stats
        listeners, solo, fire = stats.listeners, stats.solo, stats.message  # see StatsReporter
        expected, read_reply = self.profile.known_reply(data), self._read_reply
        recv_size = self.profile.recv_size
        for _ in range(count):
            queued = False  # handed to the dispatcher, which sends it in the hub when due
            if pacer is None:
                t0 = intended = clock()
            elif dispatch is None:
                intended = pacer.next_ns
                pacer.next_ns = intended + pacer.interval_ns
                sleep_until(intended)
                t0 = clock()
            else:
                intended = pacer.next_ns
                pacer.next_ns = intended + pacer.interval_ns
                t0 = clock()
                if t0 < intended:
                    self.pending = dispatch(intended, self, send, data)
                    queued = True
            try:
                if not queued:
                    self.busy = t0
                    try:
                        sent = send(data)
                    except BlockingIOError:  # the OS socket's buffer is full: gevent's sendall waits
                        sent = 0
                    if sent != size:
                        sock.sendall(data[sent:])
                if wait is not None:
                    wait(readable)
                    try:
                        reply = raw_recv(recv_size)
                    except BlockingIOError:  # woken, yet nothing to read: gevent's recv waits again
                        reply = recv(recv_size)
                else:
                    reply = recv(recv_size)
                failure = None if reply == expected else read_reply(reply)
            except OSError as exc:
                self._broken(min(intended, clock()), classify(exc))  # a queued message may not be due yet
                return False
            except BaseException:  # killed while waiting (the run stops): nothing is sent for it later
                self.pending = 0
                raise
            t1 = clock()
            self.busy = 0
            if queued:
                if self.pending:  # the connection spoke before the message left: nothing was sent
                    self.pending = 0
                    if reply:  # bytes that answer nothing sent; else the close's own failure
                        failure = UnexpectedReply(f"a reply before the message was sent: {escaped(reply)}")
                    self._broken(min(intended, t1), failure or ClosedByServer())
                    return False
                t0 = self.sent_at
            if failure is not None:
                if failure.fatal:
                    self._broken(intended, failure)
                    return False
                self._failure("message", intended, failure)  # an error reply: the session goes on
                if think and pacer is None:
                    sleep(think)
                continue
            elapsed = (t1 - intended) // 1000
            rec_message(elapsed)
            if listeners != solo:  # someone else listens: this one goes through fire (Locust's stats too)
                fire(t1 - intended, elapsed)
            if pacer is not None:
                rec_uncorrected((t1 - t0) // 1000)
                rec_lag((t0 - intended) // 1000 if t0 > intended else 0)
            elif think:
                sleep(think)
        return True

    def send_failed(self, exc: OSError) -> None:
        """The dispatcher's send failed: the waiting ``recv`` wakes (shutdown) and reports ``exc``."""
        self.send_error = exc
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send_rest(self, rest: bytes) -> None:
        """The dispatcher sent part of a message (the socket's buffer was full): a greenlet sends the rest.

        The user's greenlet waits for the reply meanwhile; leaving kills the sender first (_detach),
        so that two greenlets never wait to write on one socket.
        """
        sock = self.sock
        if sock is not None:
            self.sender = gevent.spawn(self._send_rest, sock, rest)

    def _send_rest(self, sock: socket.socket, rest: bytes) -> None:
        try:
            sock.sendall(rest)
        except OSError as exc:
            if sock is self.sock:
                self.send_failed(exc)

    def _read_reply(self, data: bytes) -> TcpFailure | None:
        """The rest of a reply the one compare did not match: read until the profile sees a whole one, check it.

        Returns the failure (None: a success). ``recv``'s OSError goes to the caller.
        """
        profile, buf = self.profile, data
        while True:
            if not data:
                if self.expired:
                    return ReplyTimeout()
                if self.send_error is not None:
                    return classify(self.send_error)
                return ClosedByServer(f"the server closed the connection mid-reply after {escaped(buf)}") if buf \
                    else ClosedByServer()
            try:
                end = profile.reply_end(buf)
            except ValueError as exc:
                return UnexpectedReply(f"a reply {profile.name} does not parse ({exc}): {escaped(buf)}")
            if end:
                break
            if len(buf) > MAX_REPLY:
                return UnexpectedReply(f"no whole {profile.name} reply in {len(buf)} bytes: {escaped(buf)}")
            data = self.sock.recv(profile.recv_size)  # type: ignore[union-attr]
            buf += data
        if end != len(buf):
            return UnexpectedReply(f"more than one reply: {escaped(buf)}")
        return profile.check(buf)

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
        elif self.send_error is not None:  # the dispatcher's send failed, and its shutdown woke the recv
            exc = classify(self.send_error)
        self._failure("message", start, exc)
        self._failure("session", self.session_start, exc)
        self.close()

    def quit(self) -> bool:
        """Send the profile's quit (chat's ``--quit--``) and wait until the server closes; report the session."""
        sock = self._detach()
        if sock is None:
            return False
        profile = self.profile
        try:
            sock.settimeout(self.quit_timeout)
            if profile.quit_bytes:
                sock.sendall(profile.quit_bytes)
            if profile.closes_after_quit:
                while sock.recv(profile.recv_size):  # drain the quit's reply, or one left by an interrupted message
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
        self.pending = 0
        if self.sender is not None:
            self.sender.kill()
            self.sender = None
        self.watchdog.discard(self)
        return sock

    def close(self) -> None:
        """Leave without the quit message (FIN): the server sees the peer close."""
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
