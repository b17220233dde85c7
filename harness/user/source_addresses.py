"""Source addresses in 127.0.0.0/8: more loopback connections than one address has ports.

Every connection to one server address and port needs its own (source address,
source port) pair, and one source address has only the ephemeral port range
(``/proc/sys/net/ipv4/ip_local_port_range``: 28,232 ports by default), shared
with every other program and with sockets in TIME_WAIT. Linux answers on every
address of 127.0.0.0/8, so the generator spreads its connections over
127.0.0.1, 127.0.0.2, ... when one address would run short. Each socket is
bound to its source with ``IP_BIND_ADDRESS_NO_PORT`` before ``connect``: the
kernel then still picks the port at connect time, by the whole 4-tuple (a plain
``bind((src, 0))`` reserves a port for every destination and runs out sooner).

Imports neither Locust nor gevent: it only sets socket options.
"""

from __future__ import annotations

import ipaddress
import math
import socket

#: Linux's value (include/uapi/linux/in.h); Python names it only on some builds.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
DEFAULT_PORTS = 60999 - 32768 + 1
#: Connections planned per source address: half its ports (the rest: TIME_WAIT, other programs).
SHARE = 0.5
MAX_ADDRESSES = 1024


def ephemeral_ports(path: str = PORT_RANGE_FILE) -> int:
    """How many ephemeral ports one source address has (Linux's default when unreadable)."""
    try:
        with open(path) as f:
            low, high = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        return DEFAULT_PORTS
    return max(1, high - low + 1)


def auto_count(connections: int, ports: int | None = None) -> int:
    """Source addresses needed so no address carries more than SHARE of its ports."""
    per_address = max(1, int((ports if ports is not None else ephemeral_ports()) * SHARE))
    return max(1, min(MAX_ADDRESSES, math.ceil(max(connections, 1) / per_address)))


def loopback_v4(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 4 and ip.is_loopback


def addresses(count: int) -> list[str]:
    """127.0.0.1, 127.0.0.2, ... (``count`` of them, all in 127.0.0.0/8)."""
    first = ipaddress.IPv4Address("127.0.0.1")
    return [str(first + i) for i in range(max(1, min(count, MAX_ADDRESSES)))]


class SourcePool:
    """Round-robin source addresses for one target; with one address, sockets are not bound.

    ``auto`` pools grow (doubling) when a connect finds no free port
    (EADDRNOTAVAIL); a fixed count (``--source-addresses N``) never changes.
    Only for an IPv4 loopback target: ::1 is one address.
    """

    def __init__(self, target: str, count: int, auto: bool) -> None:
        self.enabled = loopback_v4(target)
        self.auto = auto and self.enabled
        self.addresses = addresses(count if self.enabled else 1)
        self.index = 0

    @property
    def size(self) -> int:
        return len(self.addresses)

    def bind(self, sock: socket.socket) -> None:
        """Bind ``sock`` to the next source address, port chosen at connect (no-op for one address)."""
        pool = self.addresses
        if len(pool) < 2:
            return
        i = self.index
        self.index = i + 1 if i + 1 < len(pool) else 0
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((pool[i], 0))

    def grow(self, seen: int) -> bool:
        """After EADDRNOTAVAIL with ``seen`` addresses: True when there are more now (retry)."""
        if self.size > seen:
            return True  # another connect grew it already
        if not self.auto or self.size >= MAX_ADDRESSES:
            return False
        self.addresses = addresses(self.size * 2)
        return True
