"""The target: its address (``tcp://host:port``, ``host:port``, ``[::1]:port``, ``name:port``) and process.

Any IPv4 or IPv6 address or DNS name is accepted, as Locust accepts any host.
Names are resolved in one place, :func:`resolve` (``socket.getaddrinfo``), so a
test can replace it with one that fails and no query leaves the machine.
Shared by the Locust user and the ``swarmbench`` command line (which must not
import Locust).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from harness.server_process import RunningServer

DEFAULT_URL = "tcp://127.0.0.1:8000"
#: (host, port), or IPv6's (host, port, flowinfo, scope_id) when a scope is needed (link-local).
SockAddr = tuple[Any, ...]


def resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, SockAddr]]:
    """Every TCP address of ``host`` in the resolver's order; raises ``socket.gaierror``.

    The one seam through which names are resolved: tests replace it.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, sockaddr) for family, _type, _proto, _name, sockaddr in infos]


def split_host(host: str) -> tuple[str, int]:
    """``tcp://HOST:PORT``, ``HOST:PORT``, ``[::1]:PORT`` -> (host, port), by syntax alone (no lookup)."""
    text = (host or "").strip()
    if "://" not in text:
        text = "tcp://" + text
    try:
        parts = urlsplit(text)
        port = parts.port if parts.port is not None else 8000
        name = parts.hostname
    except ValueError as exc:
        raise ValueError(f"malformed host {host!r} ({exc}); expected tcp://HOST:PORT") from None
    if parts.scheme != "tcp" or not name or parts.path not in ("", "/") or parts.query or parts.username or parts.netloc.endswith(":"):
        raise ValueError(f"malformed host {host!r}; expected tcp://HOST:PORT, HOST:PORT or [IPV6]:PORT")
    if not 1 <= port <= 65535:
        raise ValueError(f"malformed host {host!r}: port {port} out of range")
    return name, port


def literal_family(name: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for an IP address literal, None for a name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(name).version == 6 else socket.AF_INET
    except ValueError:
        return None


def parse_host(host: str) -> tuple[socket.AddressFamily, SockAddr]:
    """``tcp://10.1.2.3:8000``, ``[::1]:8000``, ``localhost:8000``, ``db.example:6379`` -> (family, address).

    An address literal is used as is; a name is resolved through :func:`resolve`
    (its first address). A name that does not resolve is a one-line ``ValueError``.
    """
    name, port = split_host(host)
    family = literal_family(name)
    if family is not None:
        return family, (str(ipaddress.ip_address(name)), port)
    try:
        found = resolve(name, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"host {name!r} does not resolve: {getattr(exc, 'strerror', None) or exc}") from None
    if not found:
        raise ValueError(f"host {name!r} does not resolve: no TCP address")
    family, sockaddr = found[0]
    if len(sockaddr) > 2 and not sockaddr[3]:
        sockaddr = sockaddr[:2]  # IPv6 without a scope: the plain (host, port) form
    return family, tuple(sockaddr)


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
