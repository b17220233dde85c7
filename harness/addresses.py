"""Target addresses: ``tcp://host:port``, ``host:port``, ``[::1]:port``; loopback only.

Swarmbench generates load only toward this machine (127.0.0.0/8 or ::1):
anything else is refused here, before a single connect.
"""

from __future__ import annotations

import ipaddress
import re

DEFAULT_URL = "tcp://127.0.0.1:8000"
_HOST_RE = re.compile(r"^(?:tcp://)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+))(?::(?P<port>\d+))?/?$")


class AddressError(ValueError):
    """A target that cannot be used; the message is one line."""


def parse_target(text: str | None, default_port: int = 8000) -> tuple[str, int]:
    """Return (host, port) for a loopback target, or raise AddressError."""
    text = (text or DEFAULT_URL).strip()
    match = _HOST_RE.match(text)
    if not match:
        raise AddressError(f"cannot read target {text!r}: expected tcp://HOST:PORT, HOST:PORT or [::1]:PORT")
    host = match.group("v6") or match.group("host")
    port = int(match.group("port")) if match.group("port") else default_port
    if not 0 < port < 65536:
        raise AddressError(f"target {text!r}: port must be 1-65535")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(f"target {text!r}: give a loopback IP address (127.0.0.1, ::1) or localhost") from None
    if not address.is_loopback:
        raise AddressError(f"target {text!r} is not a loopback address: Swarmbench only loads 127.0.0.0/8 and ::1")
    return str(address), port
