"""The target: its address (``tcp://host:port``, ``host:port``, ``[::1]:port``; loopback only) and process.

Swarmbench generates load only toward this machine (127.0.0.0/8 or ::1):
anything else is refused here, before a single connect. Shared by the Locust
user and the ``swarmbench`` command line (which must not import Locust).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from harness.server_process import RunningServer

DEFAULT_URL = "tcp://127.0.0.1:8000"


def parse_host(host: str) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """``tcp://127.0.0.1:8000``, ``127.0.0.1:8000``, ``[::1]:8000``, ``localhost:8000`` -> (family, address).

    Only loopback is accepted: this harness never targets another machine.
    """
    text = (host or "").strip()
    if "://" not in text:
        text = "tcp://" + text
    try:
        parts = urlsplit(text)
        port = parts.port if parts.port is not None else 8000
        name = parts.hostname
    except ValueError as exc:
        raise ValueError(f"malformed host {host!r} ({exc}); expected tcp://127.0.0.1:8000") from None
    if parts.scheme != "tcp" or not name or parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(f"malformed host {host!r}; expected tcp://HOST:PORT, HOST:PORT or [::1]:PORT")
    if not 1 <= port <= 65535:
        raise ValueError(f"malformed host {host!r}: port {port} out of range")
    if name == "localhost":
        return socket.AF_INET, ("127.0.0.1", port)
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        raise ValueError(f"host {host!r} refused: only loopback (127.0.0.0/8, ::1, localhost) is allowed") from None
    if not ip.is_loopback:
        raise ValueError(f"host {host!r} refused: only loopback (127.0.0.0/8, ::1, localhost) is allowed")
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (str(ip), port)


@dataclass(frozen=True, slots=True)
class Target:
    """The server a cell loads: where it listens, its PID when known, and its process when the harness started it."""

    host: str
    port: int
    pid: int | None = None
    server: RunningServer | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def started_here(self) -> bool:
        return self.server is not None
