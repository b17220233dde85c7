"""Everything that runs inside Locust processes: the only part of Swarmbench that imports locust or gevent.

- :mod:`~harness.user.tcp_user`: the abstract ``TcpUser`` scenarios subclass;
- :mod:`~harness.user.client`: the timed TCP client and its one per-message loop (the hot path);
- :mod:`~harness.user.stats`: the one function that reports a result to Locust;
- :mod:`~harness.user.raw_socket`: the message path's OS socket and wait;
- :mod:`~harness.user.pacing`: the open loop's schedule; :mod:`~harness.user.dispatch`: its sends, from
  the hub; :mod:`~harness.user.alarm`: its wake-ups to within µs; :mod:`~harness.user.watchdog`: reply timeouts;
- :mod:`~harness.user.failures`: failure classes; :mod:`~harness.user.source_addresses`: 127.0.0.x pools;
- :mod:`~harness.user.recorder`: µs histograms per second; :mod:`~harness.user.generator_health`: the
  generator's CPU and loop lag; :mod:`~harness.user.plugin` and :mod:`~harness.user.options`: Locust's
  events and command-line options.

Scenarios import from here only (``from harness.user import TcpUser``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Where each name lives; imported on first use (PEP 562), so that ``harness.user.profiles``
#: and ``harness.user.failures`` can be imported without Locust or gevent (by harness.cli).
_HOME = {
    "TcpClient": "client", "TcpUser": "tcp_user", "Pacer": "pacing", "Profile": "profiles", "PROFILES": "profiles",
    **{name: "failures" for name in (
        "ClosedByServer", "ConnectFailed", "ConnectRefused", "ConnectTimeout", "ReplyTimeout", "ResetByServer",
        "ServerError", "SocketFailure", "TcpFailure", "TlsFailure", "UnexpectedReply", "classify",
    )},
}  # fmt: skip
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.user' has no attribute {name!r}")
    return getattr(import_module(f"harness.user.{module}"), name)
