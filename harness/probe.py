"""Before any cell: does the target resolve, accept a connection, and (with ``--tls``) complete a handshake?

A sweep that would only fail cell after cell stops here with one line instead
(exit 2). Names go through :func:`harness.target.resolve`, the one resolver
seam; TLS uses the standard library's ``ssl`` as the Locust client does.
Imports neither Locust nor gevent.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from harness import target as _target

#: Long enough for one lost SYN to be resent (Linux resends after 1 s), short enough to wait for.
PROBE_TIMEOUT_S = 3.0


class ProbeError(Exception):
    """The target cannot be loaded: one line for the user."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """``--tls``, ``--tls-ca FILE``, ``--tls-insecure``: what the client will use, checked here first."""

    ca_file: Path | None = None
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        if self.insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        try:
            return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"--tls-ca {self.ca_file}: not a readable PEM certificate file ({exc})") from None


def probe(host: str, port: int, tls: TlsSettings | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Resolve, connect (each address until one accepts) and, with ``tls``, shake hands; ProbeError if not."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        literal = _target.literal_address(host, port)  # a zone (fe80::1%eth0) as its scope id
    except ValueError as exc:
        raise ProbeError(f"target {where}: {exc}") from None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = _target.resolve(host, port)
        except (socket.gaierror, UnicodeError) as exc:
            raise ProbeError(f"target {where}: the name does not resolve ({getattr(exc, 'strerror', None) or exc})") from None
        if not addresses:
            raise ProbeError(f"target {where}: the name does not resolve (no TCP address)")
    problems = []
    for family, sockaddr in addresses:
        try:
            sock = connect(family, sockaddr, timeout)
        except OSError as exc:
            problems.append(f"{sockaddr[0]}: {connect_problem(exc, timeout)}")
            continue
        try:
            if tls is not None:
                handshake(sock, host.partition("%")[0], where, tls, timeout)  # a zone names no certificate
            return
        finally:
            sock.close()
    raise ProbeError(f"target {where} does not accept connections: " + "; ".join(problems))


def connect(family: socket.AddressFamily, sockaddr: tuple, timeout: float) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_problem(exc: OSError, timeout: float) -> str:
    """Refused, unreachable or timed out, in words."""
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return f"connect timed out after {timeout:g} s (listen queue full, firewall or host down?)"
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused (nothing listens on that port)"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"unreachable ({exc.strerror})"
    return exc.strerror or str(exc)


def handshake(sock: socket.socket, host: str, where: str, tls: TlsSettings, timeout: float) -> None:
    """A full TLS handshake with SNI and host-name check (unless --tls-insecure), then a polite close."""
    ctx = tls.context()
    try:  # an address literal is checked against the certificate's IP entries and sends no SNI
        with ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False) as tls_sock:
            tls_sock.settimeout(timeout)
            tls_sock.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        raise ProbeError(f"target {where}: TLS certificate not accepted: {exc.verify_message or exc.reason}"
                         + (" (give the CA with --tls-ca FILE)" if exc.verify_code in (19, 20, 21) else "")) from None
    except ssl.SSLError as exc:
        raise ProbeError(f"target {where}: TLS handshake failed ({exc.reason or exc}): is it a TLS server?") from None
    except (TimeoutError, socket.timeout):
        raise ProbeError(f"target {where}: no TLS handshake within {timeout:g} s: is it a TLS server?") from None
    except OSError as exc:
        raise ProbeError(f"target {where}: the connection ended during the TLS handshake ({exc.strerror or exc}): "
                         "is it a TLS server?") from None
