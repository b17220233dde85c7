"""A client's way in: one timed connect, the name's next address when one cannot be reached, then TLS.

Apart from :mod:`harness.user.client` because it runs once a session, not once a
message: what it decides (which address of a name works, how many source
addresses the pool needs) outlives any one connection, and the per-message
loop never reads it. Request names: ``connect`` and, with ``--tls``,
``tls_handshake``; failures go through the client's own report, so that a
connect's failure is counted as a message's is.
"""

from __future__ import annotations

import errno
import logging
import socket
from time import perf_counter_ns
from typing import TYPE_CHECKING, Callable

from harness.failures import TcpFailure, classify
from harness.target import alternatives, connected_to
from harness.user.source_addresses import SourcePool
from harness.user.tls import TlsSettings, tls_failure

if TYPE_CHECKING:
    from harness.user.recorder import Recorder
    from harness.user.stats import StatsReporter

LOG = logging.getLogger("swarmbench")
#: A connect failing so has nothing there to measure: the name's next address is tried.
UNREACHABLE = frozenset((errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT))
#: How a failure is reported: (request name, perf_counter_ns it began, the failure).
Failed = Callable[[str, int, TcpFailure], None]


class Connector:
    """Where a client connects (the address that last worked), from which source addresses, and with what TLS."""

    def __init__(
        self,
        stats: StatsReporter,
        recorder: Recorder,
        failed: Failed,
        family: socket.AddressFamily,
        address: tuple[str, int],
        sources: SourcePool,
        *,
        timeout: float,
        tls: TlsSettings | None,
    ) -> None:
        self.stats = stats
        self.failed = failed
        self.family = family
        self.address = address
        self.sources = sources
        self.timeout = timeout
        self.tls = tls
        self.rec_connect = recorder.buffer("connect").append
        self.rec_tls = recorder.buffer("tls_handshake").append if tls is not None else None

    def open(self, _tried: int = 0) -> tuple[socket.socket, int] | None:
        """One connect attempt: the socket (wrapped with TLS) and the perf_counter_ns it began; None when it failed.

        A failure is reported, never raised. Out of ephemeral ports (EADDRNOTAVAIL:
        nothing was sent) an automatic source pool grows and the connect is retried at
        once, unreported. A name's address that cannot be reached (refused,
        unreachable) gives way to its next address, as ``socket.create_connection``
        does, and the one that worked stays.
        """
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sources = self.sources
        seen = sources.size
        start = perf_counter_ns()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sources.bind(sock)
            sock.settimeout(self.timeout)
            sock.connect(self.address)
            sock.settimeout(None)  # the message path runs without a timer; see Watchdog
        except OSError as exc:
            sock.close()
            before = sources.size
            if exc.errno == errno.EADDRNOTAVAIL and sources.grow(seen):
                if sources.size > before:
                    LOG.warning("Swarmbench: out of ephemeral ports; now %d source addresses", sources.size)
                return self.open(_tried)
            others = alternatives(self.address) if exc.errno in UNREACHABLE else ()
            if _tried < len(others):
                self.family, self.address = others[0]
                self.sources = SourcePool(self.address[0], 1, auto=False)  # no source pool: it was another address's
                return self.open(_tried + 1)
            self.failed("connect", start, classify(exc, connecting=True))
            return None
        except BaseException:
            sock.close()
            raise
        end = perf_counter_ns()
        if _tried:
            connected_to(self.family, self.address)
        self.stats.ok("connect", end - start, 0)
        self.rec_connect((end - start) // 1000)
        if self.tls is not None:
            wrapped = self._handshake(sock, self.tls)
            if wrapped is None:
                return None
            sock = wrapped
        return sock, start

    def _handshake(self, sock: socket.socket, tls: TlsSettings) -> socket.socket | None:
        """TLS over the connected socket, timed as ``tls_handshake``; None (reported) when it fails."""
        assert self.rec_tls is not None
        start = perf_counter_ns()
        try:
            sock.settimeout(self.timeout)
            wrapped = tls.context.wrap_socket(sock, server_hostname=tls.server_name or None)
            wrapped.settimeout(None)
        except OSError as exc:  # ssl.SSLError is one
            sock.close()
            self.failed("tls_handshake", start, tls_failure(exc))
            return None
        except BaseException:
            sock.close()
            raise
        end = perf_counter_ns()
        self.stats.ok("tls_handshake", end - start, 0)
        self.rec_tls((end - start) // 1000)
        return wrapped
