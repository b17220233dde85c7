"""Everything that runs inside Locust processes: the only part of Swarmbench that imports locust or gevent.

- :mod:`~harness.user.tcp_user`: the abstract ``TcpUser`` scenarios subclass;
- :mod:`~harness.user.client`: the timed TCP client and its one per-message loop (the hot path);
- :mod:`~harness.user.stats`: the one function that reports a result to Locust;
- :mod:`~harness.user.pacing`: the open loop's schedule; :mod:`~harness.user.watchdog`: reply timeouts;
- :mod:`~harness.user.failures`: failure classes; :mod:`~harness.user.source_addresses`: 127.0.0.x pools;
- :mod:`~harness.user.recorder`: µs histograms per second; :mod:`~harness.user.generator_health`: the
  generator's CPU and loop lag; :mod:`~harness.user.plugin` and :mod:`~harness.user.options`: Locust's
  events and command-line options.

Scenarios import from here only.
"""

from harness.user.client import TcpClient
from harness.user.failures import (
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
from harness.user.pacing import Pacer
from harness.user.tcp_user import TcpUser

__all__ = [
    "ClosedByServer", "ConnectFailed", "ConnectRefused", "ConnectTimeout", "Pacer", "ReplyTimeout", "ResetByServer",
    "SocketFailure", "TcpClient", "TcpFailure", "TcpUser", "UnexpectedReply", "classify",
]  # fmt: skip
