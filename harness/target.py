"""The target: its address (``tcp://host:port``, ``host:port``, ``[::1]:port``, ``name:port``) and process.

Any IPv4 or IPv6 address or DNS name is accepted, as Locust accepts any host.
Names are resolved in one place, :func:`resolve` (``socket.getaddrinfo``), so a
test can replace it with one that fails and no query leaves the machine.
Shared by the Locust user and the ``swarmbench`` command line (which must not
import Locust).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from harness.server_process import RunningServer

DEFAULT_URL = "tcp://127.0.0.1:8000"
#: A last label the C library would read as a number (decimal, octal or hex): the name is an IPv4
#: address attempt, as URLs treat it (WHATWG), and only the four-part dotted form is one.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
#: An IPv6 zone id, decoded: an interface name or index (RFC 6874's unreserved characters).
_ZONE = re.compile(r"[A-Za-z0-9._~-]+")
#: (host, port), or IPv6's (host, port, flowinfo, scope_id) when a scope is needed (link-local).
SockAddr = tuple[Any, ...]


def resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, SockAddr]]:
    """Every TCP address of ``host`` in the resolver's order; raises ``socket.gaierror``.

    The one seam through which names are resolved: tests replace it.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, sockaddr) for family, _type, _proto, _name, sockaddr in infos]


def split_host(host: str) -> tuple[str, int]:
    """``tcp://HOST:PORT``, ``HOST:PORT``, ``[::1]:PORT`` -> (host, port), by syntax alone (no lookup).

    A scoped IPv6 literal comes as RFC 6874 writes it, ``[fe80::1%25eth0]``, and leaves as ``fe80::1%eth0``.
    """
    text = (host or "").strip()
    if "://" not in text:
        text = "tcp://" + text
    netloc = text.partition("://")[2].partition("/")[0]
    if "[" not in netloc and "@" not in netloc and netloc.count(":") > 1:  # ::1:8000 has no one port to read
        raise ValueError(f"malformed host {host!r}: IPv6 addresses go in brackets: [::1]:PORT")
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
    if "%" in name and ":" in name:  # a scoped IPv6 literal (a name with a % fails at its lookup)
        return _zoned(host, parts.netloc), port
    if ":" not in name and _NUMERIC_LABEL.fullmatch(name.rstrip(".").rpartition(".")[2]) and literal_family(name) is None:
        # the C library reads 1.2.3 as 1.2.0.3, 127.1 as 127.0.0.1, 0x7f.1 in hex: another host than the one meant
        raise ValueError(f"malformed host {host!r}: {name!r} is no IPv4 address (four parts a.b.c.d, each 0-255, "
                         "no leading zeros)")
    return name, port


def _zoned(host: str, netloc: str) -> str:
    """``fe80::1%eth0`` from the brackets of ``[fe80::1%25eth0]`` (or a bare ``%``), its zone's case kept.

    The zone is taken from the netloc, not from ``hostname``, which lowercases it (interface names are not).
    """
    address, _, zone = netloc.partition("[")[2].partition("]")[0].partition("%")
    zone = unquote(zone[2:]) if zone.startswith("25") else zone  # RFC 6874: % is written %25 (a bare % is taken too)
    if not _ZONE.fullmatch(zone):
        raise ValueError(f"malformed host {host!r}: {zone!r} is no zone id (an interface name or index after %25)")
    try:
        ipaddress.IPv6Address(f"{address}%{zone}")
    except ValueError:
        raise ValueError(f"malformed host {host!r}: only an IPv6 address takes a zone (%25)") from None
    return f"{address}%{zone}"


def literal_family(name: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for an IP address literal, None for a name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(name).version == 6 else socket.AF_INET
    except ValueError:
        return None


def literal_address(name: str, port: int) -> tuple[socket.AddressFamily, SockAddr] | None:
    """An IP address literal's (family, sockaddr), None for a name; ``ValueError`` for a zone no interface has.

    A zone (``fe80::1%eth0``) becomes the sockaddr's scope id: the C library reads ``%eth0`` in
    a link-local address only, and ``::1%lo`` would not resolve.
    """
    family = literal_family(name)
    if family is None:
        return None
    address, _, zone = name.partition("%")
    if not zone:
        return family, (str(ipaddress.ip_address(address)), port)
    try:
        scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
    except OSError:
        raise ValueError(f"host {name!r}: no network interface {zone!r} on this machine") from None
    return family, (str(ipaddress.ip_address(address)), port, 0, scope)


def parse_host(host: str) -> tuple[socket.AddressFamily, SockAddr]:
    """``tcp://10.1.2.3:8000``, ``[::1]:8000``, ``localhost:8000``, ``db.example:6379`` -> (family, address).

    An address literal is used as is; a name is resolved through :func:`resolve`:
    its first address, or the one a connect of this process last succeeded on
    (:func:`connected_to`). A name with several addresses keeps them for
    :func:`alternatives`. A name that does not resolve is a one-line ``ValueError``.
    """
    name, port = split_host(host)
    literal = literal_address(name, port)
    if literal is not None:
        return literal
    try:
        found = resolve(name, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"host {name!r} does not resolve: {getattr(exc, 'strerror', None) or exc}") from None
    if not found:
        raise ValueError(f"host {name!r} does not resolve: no TCP address")
    addresses = tuple(dict.fromkeys((family, _plain(sockaddr)) for family, sockaddr in found))
    if len(addresses) > 1:
        for _family, sockaddr in addresses:
            _siblings[sockaddr] = addresses
    return _worked.get(addresses, addresses[0])


def _plain(sockaddr: SockAddr) -> SockAddr:
    if len(sockaddr) > 2 and not sockaddr[3]:
        sockaddr = sockaddr[:2]  # IPv6 without a scope: the plain (host, port) form
    return tuple(sockaddr)


Address = tuple[socket.AddressFamily, SockAddr]
# Per process, for names with several addresses: all of them (by each of them) and the one that worked.
_siblings: dict[SockAddr, tuple[Address, ...]] = {}
_worked: dict[tuple[Address, ...], Address] = {}


def alternatives(sockaddr: SockAddr) -> tuple[Address, ...]:
    """The other addresses of the name ``sockaddr`` came from, next first, in the resolver's order (wrapping).

    Empty for an address literal or a name with one address. A user whose connect is refused
    tries these in turn, as ``socket.create_connection`` does: the probe tried each address.
    """
    addresses = _siblings.get(tuple(sockaddr), ())
    for i, (_family, other) in enumerate(addresses):
        if other == tuple(sockaddr):
            return addresses[i + 1 :] + addresses[:i]
    return ()


def connected_to(family: socket.AddressFamily, sockaddr: SockAddr) -> None:
    """A connect succeeded on this alternative: :func:`parse_host` gives it first from now on, in this process."""
    addresses = _siblings.get(tuple(sockaddr))
    if addresses is not None:
        _worked[addresses] = (family, tuple(sockaddr))


@dataclass(frozen=True, slots=True)
class Target:
    """The server a cell loads: where it listens, its PID when known, and its process when the harness started it."""

    host: str
    port: int
    pid: int | None = None
    server: RunningServer | None = None

    @property
    def url(self) -> str:
        host = f"[{quote(self.host, safe=':.')}]" if ":" in self.host else self.host  # a zone's % as %25 (RFC 6874)
        return f"tcp://{host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def started_here(self) -> bool:
        return self.server is not None
