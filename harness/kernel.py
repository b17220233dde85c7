"""The kernel's view of TCP: its counters, and the connections open on a port.

Under ``listen(6)`` a full accept queue makes Linux drop the client's SYN
without a word (``ListenOverflows`` and ``ListenDrops`` rise); the client
sends it again 1 s later, then 2 s, then 4 s after that (``TCPSynRetrans``),
which is why connect times cluster at 1 s, 3 s and 7 s.

Every counter here is machine-wide (strictly: per network namespace), not
per server or per port: another program's traffic during the window counts
too. Read them before and after a run and report :func:`counter_deltas`.
:class:`ConnectionCounter`, on the other hand, counts one port's connections.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

#: The counters kept, by the name the kernel gives them (prefix dropped).
WATCHED: tuple[str, ...] = (
    # TcpExt: (/proc/net/netstat)
    "ListenOverflows",  # accept queue full: SYN or final ACK dropped
    "ListenDrops",  # every SYN dropped at a listener (overflows included)
    "TCPSynRetrans",  # SYNs sent again (client side of a dropped SYN)
    "SyncookiesSent",  # SYN queue full, answered with a cookie instead
    "TCPReqQFullDrop",  # SYN queue full and no cookies: dropped
    "TCPReqQFullDoCookies",
    "TCPTimeouts",
    "TCPAbortOnData",  # closed with unread data: RST sent
    "TCPAbortOnClose",
    "TCPBacklogDrop",  # socket backlog (owned by user) full
    # Tcp: (/proc/net/snmp)
    "EstabResets",
    "AttemptFails",
)

_SOURCES: tuple[tuple[str, str], ...] = (
    ("/proc/net/netstat", "TcpExt:"),
    ("/proc/net/snmp", "Tcp:"),
)


def parse_counter_table(text: str, prefix: str) -> dict[str, int]:
    """Parse the header/value line pair that starts with ``prefix`` (``"TcpExt:"``)."""
    lines = [line.split() for line in text.splitlines() if line.startswith(prefix + " ")]
    counters: dict[str, int] = {}
    for names, values in zip(lines[0::2], lines[1::2]):
        for name, value in zip(names[1:], values[1:]):
            try:
                counters[name] = int(value)
            except ValueError:
                continue
    return counters


def read_tcp_counters(
    names: Iterable[str] = WATCHED, sources: Iterable[tuple[str, str]] = _SOURCES
) -> dict[str, int]:
    """The current value of each watched counter (machine-wide; missing ones omitted).

    Returns ``{}`` where ``/proc/net`` cannot be read (not Linux, or hidden);
    :func:`counter_deltas` then makes each of them None, not 0.
    """
    wanted = set(names)
    found: dict[str, int] = {}
    for path, prefix in sources:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for name, value in parse_counter_table(text, prefix).items():
            if name in wanted:
                found[name] = value
    return {name: found[name] for name in WATCHED if name in found} | found


def counter_deltas(
    before: dict[str, int], after: dict[str, int], names: Iterable[str] = WATCHED
) -> dict[str, int | None]:
    """``after - before`` for each counter (machine-wide, like the counters).

    A watched counter missing from either reading (``/proc/net`` unreadable, or
    a kernel without it) is None: not measured, which is not "the kernel counted
    none". A counter that went down has wrapped (32-bit ones on old kernels): the
    delta is taken modulo 2**32, or 2**64 where the old value needed more bits.
    """
    deltas: dict[str, int | None] = {name: None for name in names if name not in before or name not in after}
    for name, old in before.items():
        if name not in after:
            deltas[name] = None
            continue
        delta = after[name] - old
        if delta < 0:
            delta += 1 << (64 if old >= 1 << 32 else 32)
        deltas[name] = delta
    return deltas


#: /proc/net/tcp's state code for ESTABLISHED.
_ESTABLISHED = b"01"


def established_pattern(port: int) -> re.Pattern[bytes]:
    """Match a /proc/net/tcp{,6} line: local port ``port``, state ESTABLISHED.

    Line format (``sl local rem st ...``): ``  12: 0100007F:1F40 0100007F:D3A2 01 ...``.
    Anchored on the local address so that client sockets whose *remote* port
    is ``port`` (a load generator on the same machine) are not counted.
    """
    return re.compile(
        rb"^ *\d+: [0-9A-F]+:%04X [0-9A-F]+:[0-9A-F]{4} %s " % (port, _ESTABLISHED), re.MULTILINE
    )


class ConnectionCounter:
    """Count ESTABLISHED TCP sockets whose local port is ``port``, in ``pid``'s network namespace.

    The kernel does the filtering: one sock_diag netlink dump per address
    family with a bytecode filter on the local port returns only the
    matching sockets (about 0.6 ms for 300 of them, where reading
    ``/proc/net/tcp`` and ``tcp6`` took 10 ms on a 2-core VM: that walk
    formats every socket on the machine). Where netlink is unavailable or
    the server lives in another network namespace, the server's own
    ``/proc/PID/net/tcp{,6}`` tables are read instead.

    Connections still waiting in the accept queue are ESTABLISHED too and
    are counted: the client sees them as connected.
    """

    def __init__(self, pid: int, port: int) -> None:
        self.port = port
        self.pattern = established_pattern(port)
        self.paths = (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6")
        self.requests = tuple(_diag_request(family, port) for family in (socket.AF_INET, socket.AF_INET6))
        self.use_netlink = _same_netns(pid)
        self._buffer = bytearray(1 << 16)

    def count(self) -> int:
        if self.use_netlink:
            try:
                return self._count_netlink()
            except OSError:
                self.use_netlink = False  # e.g. a sandbox without AF_NETLINK: fall back for good
        return self._count_proc()

    def _count_netlink(self) -> int:
        total = 0
        buf = self._buffer
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            for request in self.requests:
                nl.send(request)
                done = False
                while not done:
                    size = nl.recv_into(buf)
                    offset = 0
                    while offset + 16 <= size:
                        length, kind = _NLMSG_HEADER.unpack_from(buf, offset)
                        if kind == _SOCK_DIAG_BY_FAMILY:
                            total += 1
                        elif kind == _NLMSG_DONE:
                            done = True
                            break
                        elif kind == _NLMSG_ERROR:
                            (error,) = struct.unpack_from("=i", buf, offset + 16)
                            raise OSError(-error, f"sock_diag: {os.strerror(-error)}")
                        offset += (length + 3) & ~3
                    if size == 0:
                        raise OSError("sock_diag: empty reply")
        return total

    def _count_proc(self) -> int:
        total = 0
        for path in self.paths:
            try:
                with open(path, "rb") as table:
                    data = table.read()
            except OSError:  # no IPv6, or the process is gone
                continue
            total += len(self.pattern.findall(data))
        return total


# sock_diag (linux/inet_diag.h, linux/netlink.h): just what a filtered TCP dump needs.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_INET_DIAG_REQ_BYTECODE = 1
_INET_DIAG_BC_S_GE, _INET_DIAG_BC_S_LE = 2, 3
_TCPF_ESTABLISHED = 1 << 1
_NLMSG_HEADER = struct.Struct("=IH")


def _diag_request(family: int, port: int) -> bytes:
    """A dump request: TCP sockets of ``family``, ESTABLISHED, local port == ``port``.

    The filter is ``sport >= port and sport <= port`` (the ``S_EQ`` op is
    newer). Each op is (code, bytes to jump if true, bytes to jump if false);
    a jump 4 bytes past the end rejects the socket, reaching the end exactly
    accepts it; the operand rides in the next op's third field.
    """
    op = struct.Struct("=BBH")
    bytecode = (
        op.pack(_INET_DIAG_BC_S_GE, 8, 16 + 4) + op.pack(0, 0, port)
        + op.pack(_INET_DIAG_BC_S_LE, 8, 8 + 4) + op.pack(0, 0, port)
    )  # fmt: skip
    attribute = struct.pack("=HH", 4 + len(bytecode), _INET_DIAG_REQ_BYTECODE) + bytecode
    # inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48 bytes).
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, _TCPF_ESTABLISHED) + bytes(48) + attribute
    return struct.pack("=IHHII", 16 + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0) + body


def _same_netns(pid: int) -> bool:
    """Whether ``pid`` shares our network namespace (so a netlink dump sees its sockets)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Print the watched counters, one ``name value`` a line."""
    argparse.ArgumentParser(
        prog="python -m harness.kernel", description="Print the kernel's TCP counters (machine-wide)."
    ).parse_args(argv)
    for name, value in read_tcp_counters().items():
        print(f"{name} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
