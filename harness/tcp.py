"""Locust's user for the chat protocol: a timed TCP client and an abstract ``TcpUser``.

Follows Locust's recipe for other protocols (its custom XML-RPC client): a
wrapper on a plain ``socket`` (gevent makes it cooperative) that times each call
with ``perf_counter_ns`` and fires the ``request`` event. Request names:
``connect``, ``message`` (send until the ``-`` is read) and ``session`` (connect
until the server closed after ``--quit--``). Every latency also goes, as an int
of µs, into the per-second buffers of :mod:`harness.histograms`.

The per-message loop is the hot path: no socket timeout (gevent would arm a
timer per wait); a watchdog greenlet shuts down sockets whose reply is late.
"""

from __future__ import annotations

import errno
import itertools
import logging
import random
import socket
import struct
from time import perf_counter_ns
from typing import Any

import gevent
from locust import User
from locust.exception import StopUser

from harness.addresses import parse_host
from harness.failures import (  # re-exported: scenarios and tests name them through harness.tcp
    ClosedByServer,
    ConnectFailed,
    ConnectRefused,
    ConnectTimeout,
    ReplyTimeout,
    ResetByServer,
    SocketFailure,
    TcpFailure,
    UnexpectedReply,
    classify,
)
from harness.locust_plugin import (
    DEFAULT_HOST,
    ScenarioOptions,
    current_run,
    scenario_options,
    total_users,
)
from harness.pacing import Pacer
from harness.sources import pool_for
from harness.watchdog import WATCHDOG, Watchdog
from server.protocol import MAX_MESSAGE, QUIT, REPLY

__all__ = [
    "ClosedByServer", "ConnectFailed", "ConnectRefused", "ConnectTimeout", "Pacer", "ReplyTimeout", "ResetByServer",
    "SocketFailure", "TcpClient", "TcpFailure", "TcpUser", "UnexpectedReply", "Watchdog", "classify",
]  # fmt: skip
LOG = logging.getLogger("swarmbench")
REQUEST_TYPE = "tcp"
#: A message in flight longer than this when the run stops counts as unanswered.
STALLED_S = 1.0


def stats_listener(hook: Any) -> tuple[list[Any], list[Any] | None]:
    """``(listeners, solo)``: while ``listeners == solo``, Locust's stats listener is the only one.

    Then a successful message calls it directly: EventHook.fire copies its
    handler list and wraps each call in a try, about a third of Locust's whole
    per-request work. The comparison is made at every message (a length check
    and one identity test, in C) on the hook's own list, so a listener added at
    any time, by a plugin or a locustfile, gets every later message through the
    documented ``fire``. ``solo`` is None when Locust's listener is not recognised.
    """
    handlers = getattr(hook, "_handlers", None)
    if not isinstance(handlers, list):
        return [], None
    for handler in handlers:
        if getattr(handler, "__qualname__", "").startswith("Runner.__init__.") and handler.__module__ == "locust.runners":
            return handlers, [handler]
    return handlers, None


class TcpClient:
    """One connection at a time to the chat server; every call is timed and reported."""

    def __init__(self, user: TcpUser, family: socket.AddressFamily, address: tuple[str, int]) -> None:
        self.family = family
        self.address = address
        self.context: dict[str, Any] = {}
        hook = user.environment.events.request
        self.fire = hook.fire
        self.listeners, self.solo = stats_listener(hook)
        options = user.options
        self.connect_timeout = user.connect_timeout if user.connect_timeout is not None else options.connect_timeout
        self.sources = pool_for(address[0], options.source_addresses, total_users(user.environment))
        self.quit_timeout = user.quit_timeout
        self.reply_timeout_ns = int(user.reply_timeout * 1e9)
        self.sock: socket.socket | None = None
        self.busy = 0  # perf_counter_ns of the message in flight (the watchdog reads it)
        self.expired = False
        self.session_start = 0
        self.recorder = recorder = current_run().recorder
        self.rec_connect = recorder.buffer("connect").append
        self.rec_message = recorder.buffer("message").append
        self.rec_session = recorder.buffer("session").append
        self.rec_uncorrected = recorder.buffer("message_uncorrected").append
        self.rec_send_lag = recorder.buffer("send_lag").append

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def _failure(self, name: str, start: int, exc: TcpFailure) -> None:
        self.fire(
            request_type=REQUEST_TYPE, name=name, response_time=(perf_counter_ns() - start) / 1e6,
            response_length=0, exception=exc, context=self.context,
        )  # fmt: skip
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
        self.fire(
            request_type=REQUEST_TYPE, name="connect", response_time=(end - start) / 1e6,
            response_length=0, exception=None, context=self.context,
        )  # fmt: skip
        self.rec_connect((end - start) // 1000)
        self.sock, self.session_start, self.expired = sock, start, False
        WATCHDOG.add(self)
        return True

    def _fire_ok(self, elapsed_ns: int) -> None:
        """A successful message, through ``fire`` (some listener other than Locust's stats)."""
        self.fire(
            request_type=REQUEST_TYPE, name="message", response_time=elapsed_ns / 1e6,
            response_length=1, exception=None, context=self.context,
        )  # fmt: skip

    def messages(self, count: int, data: bytes, think: float = 0.0) -> bool:
        """Closed loop: ``count`` messages, each waiting for its ``-``; False when the session broke.

        The time from a reply's arrival to this greenlet running again is inside
        ``message``; the process's ``loop_lag`` histogram shows how much of it the
        generator's own hub adds.
        """
        sock = self.sock
        if sock is None:
            return False
        send, recv, rec_message = sock.send, sock.recv, self.rec_message
        listeners, solo = self.listeners, self.solo
        stats = solo[0] if solo else None
        size, clock = len(data), perf_counter_ns
        for _ in range(count):
            t0 = clock()
            self.busy = t0
            try:
                sent = send(data)
                if sent != size:
                    sock.sendall(data[sent:])
                reply = recv(MAX_MESSAGE)
            except OSError as exc:
                self._broken(t0, classify(exc))
                return False
            t1 = clock()
            self.busy = 0
            if reply != REPLY:
                self._broken(t0, self._bad_reply(reply))
                return False
            elapsed = t1 - t0
            if listeners == solo:
                stats(request_type=REQUEST_TYPE, name="message", response_time=elapsed / 1e6, response_length=1)
            else:
                self._fire_ok(elapsed)
            rec_message(elapsed // 1000)
            if think:
                gevent.sleep(think)
        return True

    def messages_paced(self, count: int, data: bytes, pacer: Pacer) -> bool:
        """Open loop: send on ``pacer``'s schedule; latency counts from the intended send time."""
        sock = self.sock
        if sock is None:
            return False
        send, recv, listeners, solo = sock.send, sock.recv, self.listeners, self.solo
        stats = solo[0] if solo else None
        rec_message, rec_uncorrected, rec_lag = self.rec_message, self.rec_uncorrected, self.rec_send_lag
        size, clock, sleep = len(data), perf_counter_ns, gevent.sleep
        for _ in range(count):
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
            if listeners == solo:
                stats(request_type=REQUEST_TYPE, name="message", response_time=(t1 - intended) / 1e6, response_length=1)
            else:
                self._fire_ok(t1 - intended)
            rec_message((t1 - intended) // 1000)
            rec_uncorrected((t1 - t0) // 1000)
            rec_lag((t0 - intended) // 1000 if t0 > intended else 0)
        return True

    def _bad_reply(self, reply: bytes) -> TcpFailure:
        if reply:
            return UnexpectedReply(f"a reply other than '-' ({len(reply)} bytes)")
        return ReplyTimeout() if self.expired else ClosedByServer()

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
        sock = self.sock
        if sock is None:
            return False
        self.sock = None
        WATCHDOG.clients.discard(self)
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
        self.fire(
            request_type=REQUEST_TYPE, name="session", response_time=(end - self.session_start) / 1e6,
            response_length=0, exception=None, context=self.context,
        )  # fmt: skip
        self.rec_session((end - self.session_start) // 1000)
        return True

    def close(self) -> None:
        """Leave without ``--quit--`` (FIN): the server sees the peer close."""
        sock, self.sock = self.sock, None
        WATCHDOG.clients.discard(self)
        if sock is not None:
            sock.close()

    def reset(self) -> None:
        """Leave with a reset (SO_LINGER 0 -> RST): the server sees ECONNRESET."""
        sock, self.sock = self.sock, None
        WATCHDOG.clients.discard(self)
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            sock.close()


class TcpUser(User):
    """Abstract Locust user for the chat server; scenarios subclass it and add tasks."""

    abstract = True
    host = DEFAULT_HOST
    #: None: ``--connect-timeout`` (35 s: SYNs dropped by a full listen queue are resent at 1, 3, 7, 15, 31 s)
    connect_timeout: float | None = None
    reply_timeout = 10.0
    quit_timeout = 2.0
    backoff_min = 0.05
    backoff_max = 1.0
    _leave = itertools.count()

    options: ScenarioOptions
    client: TcpClient

    def on_start(self) -> None:
        self.client = None  # type: ignore[assignment]
        self.pacer: Pacer | None = None
        self._backoff = self.backoff_min
        self._in_phase = True

    def _setup(self) -> None:
        """Options and host, checked in a task (a bad value from the web UI: one log line, user stops)."""
        try:
            self.options = scenario_options(self.environment.parsed_options)
            family, address = parse_host(self.host or DEFAULT_HOST)
        except ValueError as exc:
            LOG.error("%s", exc)
            raise StopUser() from None
        self.client = TcpClient(self, family, address)
        self.payload = self.options.payload
        if self.options.rate:
            self.pacer = Pacer(self.options.rate / total_users(self.environment))

    # -- building blocks for scenario tasks ---------------------------------------------
    def connect(self) -> None:
        """Connect, retrying with bounded exponential backoff; returns once connected."""
        if self.client is None:
            self._setup()
        while not self.client.connect():
            gevent.sleep(self._backoff * random.uniform(0.5, 1.0))
            self._backoff = min(self._backoff * 2, self.backoff_max)
        self._backoff = self.backoff_min
        if self.pacer is not None:
            self.pacer.resume()

    def send_messages(self, count: int | None = None) -> bool:
        """``count`` messages (default ``--messages-per-session``), open or closed loop."""
        count = self.options.messages_per_session if count is None else count
        if self.pacer is not None:
            return self.client.messages_paced(count, self.payload, self.pacer)
        think = self.options.think_time
        if think and self._in_phase:
            # Locust spawns a second's users at once: without a random first pause they
            # would send in lockstep, a burst of them every think time
            self._in_phase = False
            gevent.sleep(random.random() * think)
        return self.client.messages(count, self.payload, think)

    def quit(self) -> bool:
        return self.client.quit()

    def leave_abruptly(self) -> None:
        """Close or reset, alternately over all sessions of the process (half and half)."""
        if next(TcpUser._leave) % 2:
            self.client.reset()
        else:
            self.client.close()

    def on_stop(self) -> None:
        """The run stops: a connected user quits cleanly, so the server sees quits, not resets.

        A message still unanswered after ``STALLED_S`` is recorded (HDR only, as ``unanswered``,
        with its wait so far): a server that leaves users unserved must not look fast just
        because the messages it never answered are in no latency figure.
        """
        client = self.client
        if client is not None and client.connected:
            if client.busy:
                waited = perf_counter_ns() - client.busy
                if waited > STALLED_S * 1e9:
                    client.recorder.buffer("unanswered").append(waited // 1000)
            client.busy = 0
            client.quit()
