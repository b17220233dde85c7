"""Everything that runs inside Locust processes: the only part of Swarmbench that imports locust or gevent.

- :mod:`~harness.user.tcp_user`: the abstract ``TcpUser`` scenarios subclass;
- :mod:`~harness.user.client`: the timed TCP client and its one per-message loop (the hot path);
  :mod:`~harness.user.connector`: its connect (the name's next address, the source pool) and TLS handshake;
- :mod:`~harness.user.stats`: the one function that reports a result to Locust;
- :mod:`~harness.user.raw_socket`: the message path's OS socket and wait;
- :mod:`~harness.user.pacing`: the open loop's schedule; :mod:`~harness.user.send_timer`: its sends, from
  the hub; :mod:`~harness.user.alarm`: its wake-ups to within µs; :mod:`~harness.user.watchdog`: reply timeouts;
- :mod:`~harness.user.source_addresses`: 127.0.0.x pools;
- :mod:`~harness.user.recorder`: µs histograms per second; :mod:`~harness.user.generator_health`: the
  generator's CPU and loop lag;
- :mod:`~harness.user.plugin`: Locust's events, one plugin class per role (local, master, worker);
  :mod:`~harness.user.run`: a test run's state and its file; :mod:`~harness.user.phases`: establish,
  settle, measure; :mod:`~harness.user.options`: the command-line options.

Scenarios import from here (``from harness.user import TcpUser``), which imports Locust and so
patches the process with gevent, as ``import locust`` does. The framing (:mod:`harness.profiles`)
and the failure classes (:mod:`harness.failures`) need neither, and live outside this package.
"""

from __future__ import annotations

from harness.failures import (
    ClosedByServer, ConnectFailed, ConnectRefused, ConnectTimeout, ReplyTimeout, ResetByServer, ServerError,
    SocketFailure, TcpFailure, TlsFailure, UnexpectedReply, classify,
)  # fmt: skip
from harness.profiles import PROFILES, Profile
from harness.user.client import TcpClient
from harness.user.pacing import Pacer
from harness.user.tcp_user import TcpUser

__all__ = [
    "PROFILES", "ClosedByServer", "ConnectFailed", "ConnectRefused", "ConnectTimeout", "Pacer", "Profile",
    "ReplyTimeout", "ResetByServer", "ServerError", "SocketFailure", "TcpClient", "TcpFailure", "TcpUser",
    "TlsFailure", "UnexpectedReply", "classify",
]  # fmt: skip
