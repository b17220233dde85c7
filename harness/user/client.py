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
send timer and waits for the reply at once (:mod:`harness.user.send_timer`). It
sees its run through :class:`ClientRun`, as the watchdog sees it through ``Watched``.
"""

from __future__ import annotations

import socket
import struct
from time import perf_counter_ns
from typing import TYPE_CHECKING, Protocol

import gevent

from harness.user.alarm import sleeper
from harness.failures import (ClosedByServer, ReplyTimeout, ReplyTooLarge, TcpFailure, UnexpectedReply, bounded, classify,
                               escaped)
from harness.results.histogram_file import FAILED
from harness.user.pacing import Pacer
from harness.profiles import ChatProfile, Profile, TooLarge
from harness.user.raw_socket import raw_socket
from harness.user.connector import Connector
from harness.user.stats import StatsReporter
from harness.user.tls import TlsSettings

if TYPE_CHECKING:
    from harness.user.alarm import Alarm
    from harness.user.recorder import Recorder
    from harness.user.send_timer import SendTimer
    from harness.user.source_addresses import SourcePool
    from harness.user.watchdog import Watchdog

#: A reply read without a wait lets the other greenlets run this often (the watchdog, the run's stop).
YIELD_NS = 1_000_000


class ClientRun(Protocol):
    """What a client uses of its run: where it records, who watches it, how its open loop sends and waits."""

    recorder: Recorder
    watchdog: Watchdog
    alarm: Alarm | None  # None: gevent.sleep alone (no timerfd here)
    send_timer: SendTimer | None  # None: no users run here

    def source_pool(self, target: str, count: int, connections: int) -> SourcePool: ...


class TcpClient:
    """One connection at a time to the server; every call is timed and reported."""

    def __init__(
        self,
        run: ClientRun,
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
        self.stats = stats
        self.watchdog = run.watchdog
        self.sleep_until = sleeper(run.alarm)  # the open loop's under TLS: to within µs (see harness.user.alarm)
        # the open loop's sends on plain TCP (see harness.user.send_timer): made in the hub when due
        self.send_at = run.send_timer.send_at if run.send_timer is not None and tls is None else None
        # what the send timer reads and stamps (its Queued protocol):
        self.pending = 0  # the timer's ticket of the message waiting to be sent; 0: none
        self.sent_at = 0  # perf_counter_ns when the timer sent it
        self.send_error: OSError | None = None  # what the timer's send raised
        self.sender: gevent.Greenlet | None = None  # sends the rest of a message the timer began
        self.quit_timeout = quit_timeout
        self.reply_timeout_ns = int(reply_timeout * 1e9)
        self.sock: socket.socket | None = None
        self.busy = 0  # perf_counter_ns of the message in flight (the watchdog reads it)
        self.pacer: Pacer | None = None  # the open loop's schedule of the last messages() (the census reads it)
        self.expired = False
        self.session_start = 0
        self.recorder = recorder = run.recorder
        self.connector = Connector(stats, recorder, self._failure, family, address,
                                   run.source_pool(address[0], source_addresses, users), timeout=connect_timeout, tls=tls)
        self.rec_message = recorder.buffer("message").append
        self.rec_session = recorder.buffer("session").append
        self.rec_uncorrected = recorder.buffer("message_uncorrected").append
        self.rec_send_lag = recorder.buffer("send_lag").append
        self.rec_failed = recorder.buffer(FAILED).append  # a message with no reply: its wait until it failed

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def _failure(self, name: str, start: int, exc: TcpFailure) -> None:
        self.stats.failure(name, start, bounded(exc))  # server-chosen texts: a bounded set of rows
        self.recorder.fail(name, exc.__class__.__name__)

    def connect(self) -> bool:
        """One connect (with ``--tls``, and its handshake) attempt, timed; a failure is reported, never raised.

        Which address and source addresses it uses is :class:`~harness.user.connector.Connector`'s.
        """
        opened = self.connector.open()
        if opened is None:
            return False
        self.sock, self.session_start = opened
        self.expired, self.send_error = False, None
        self.watchdog.add(self)
        return True

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
        self.pacer = pacer
        recv, rec_message = sock.recv, self.rec_message
        raw = raw_socket(sock) if self.tls is None else None
        if raw is None:  # TLS, or not gevent's socket: its own methods, and the open loop sleeps until due
            send, raw_recv, wait, readable, send_at = sock.send, recv, None, None, None
        else:
            send, raw_recv, wait, readable = raw
            send_at = self.send_at if pacer is not None else None
        rec_uncorrected, rec_lag = self.rec_uncorrected, self.rec_send_lag
        size, clock, sleep, sleep_until = len(data), perf_counter_ns, gevent.sleep, self.sleep_until
        stats = self.stats
        listeners, solo, fire = stats.listeners, stats.solo, stats.message  # see StatsReporter
        expected, read_reply = self.profile.known_reply(data), self._read_reply
        recv_size = self.profile.recv_size
        for _ in range(count):
            queued = False  # handed to the send timer, which sends it in the hub when due
            if pacer is None:
                t0 = intended = clock()
            elif send_at is None:
                intended = pacer.next_ns
                pacer.next_ns = intended + pacer.interval_ns
                sleep_until(intended)
                t0 = clock()
            else:
                intended = pacer.next_ns
                pacer.next_ns = intended + pacer.interval_ns
                t0 = clock()
                if t0 < intended:
                    self.pending = send_at(intended, self, send, data)
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
        """The send timer's send failed: the waiting ``recv`` wakes (shutdown) and reports ``exc``."""
        self.send_error = exc
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send_rest(self, rest: bytes) -> None:
        """The send timer sent part of a message (the socket's buffer was full): a greenlet sends the rest.

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

        Returns the failure (None: a success). ``recv``'s OSError goes to the caller. A reply in one
        read is parsed once (``reply_end``); a longer one goes to the profile's reader, which resumes
        where the last read stopped. A server that keeps sending never lets ``recv`` wait, so neither
        the watchdog nor the run's stop would get a turn: this loop checks the reply's time itself and
        lets the other greenlets run every ``YIELD_NS`` of reading.
        """
        profile = self.profile
        if data:
            try:
                end = profile.reply_end(data)
            except ValueError as exc:
                return self._unparsed(exc, data)
            if end:
                return profile.check(data) if end == len(data) else UnexpectedReply(f"more than one reply: {escaped(data)}")
        reader, clock = profile.reader(), perf_counter_ns
        deadline = (self.busy or clock()) + self.reply_timeout_ns
        turn = clock() + YIELD_NS
        while True:
            if not data:
                if self.expired:
                    return ReplyTimeout()
                if self.send_error is not None:
                    return classify(self.send_error)
                buf = reader.buffer
                return ClosedByServer(f"the server closed the connection mid-reply after {escaped(buf)}") if buf \
                    else ClosedByServer()
            try:
                end = reader.feed(data)
            except ValueError as exc:
                return self._unparsed(exc, reader.buffer)
            if end:
                break
            now = clock()
            if self.expired or now > deadline:  # the watchdog's shutdown does not stop a server that keeps sending
                return ReplyTimeout()
            if now > turn:
                gevent.sleep(0)
                turn = clock() + YIELD_NS
            data = self.sock.recv(profile.recv_size)  # type: ignore[union-attr]
        buf = bytes(reader.buffer)
        if end != len(buf):
            return UnexpectedReply(f"more than one reply: {escaped(buf)}")
        return profile.check(buf)

    def _unparsed(self, exc: ValueError, buf: bytes | bytearray) -> TcpFailure:
        if isinstance(exc, TooLarge):
            return ReplyTooLarge(str(exc))
        return UnexpectedReply(f"a reply {self.profile.name} does not parse ({exc}): {escaped(buf)}")

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
        elif self.send_error is not None:  # the send timer's send failed, and its shutdown woke the recv
            exc = classify(self.send_error)
        self.rec_failed(max(0, perf_counter_ns() - start) // 1000)
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
                # drain the quit's reply, or one left by an interrupted message: within the quit's time in all,
                # even from a server that never stops sending (the run's stop waits for this)
                now = perf_counter_ns()
                deadline, turn = now + int(self.quit_timeout * 1e9), now + YIELD_NS
                while sock.recv(profile.recv_size):
                    now = perf_counter_ns()
                    if now > deadline:
                        raise TimeoutError("the server kept sending after the quit")
                    if now > turn:
                        gevent.sleep(0)
                        turn = perf_counter_ns() + YIELD_NS
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
