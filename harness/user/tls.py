"""The TLS client's settings: one stdlib ``ssl`` context per process, the SNI name, one-line failures.

Stdlib only (no Locust, no gevent): the command line can check a target's TLS
before a run with the same context the users get. Under Locust, gevent's
patched ``ssl`` makes the handshake cooperative.
"""

from __future__ import annotations

import functools
import logging
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from harness.failures import TlsFailure

LOG = logging.getLogger("swarmbench")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What a client needs to wrap its socket: the context and the name it checks (and sends as SNI)."""

    context: ssl.SSLContext
    server_name: str


@functools.cache
def client_context(ca_file: str = "", insecure: bool = False) -> ssl.SSLContext:
    """The process's context for (``ca_file``, ``insecure``); the insecure one is warned about once.

    ``ca_file`` empty: the system's CAs. ``ssl.SSLError``/``OSError`` when the file is not a CA bundle.
    """
    context = ssl.create_default_context(cafile=ca_file or None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        LOG.warning("Swarmbench: --tls-insecure: the server's certificate is NOT verified (anyone can pose as it)")
    return context


def server_name(host: str) -> str:
    """The host name of ``tcp://NAME:PORT`` / ``NAME:PORT`` / ``[::1]:PORT``: checked against the certificate, sent as SNI."""
    text = host.strip()
    if "://" not in text:
        text = "tcp://" + text
    return (urlsplit(text).hostname or "").partition("%")[0]  # an IPv6 zone (%25eth0) names no certificate


def settings(host: str, ca_file: str, insecure: bool) -> TlsSettings:
    """Settings for ``host``; a one-line ``ValueError`` when the CA file cannot be loaded."""
    try:
        context = client_context(ca_file, insecure)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"--tls-ca {ca_file}: not a readable CA certificate file ({_reason(exc)})") from None
    return TlsSettings(context, server_name(host))


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or exc.__class__.__name__).replace("\n", " ")


def tls_failure(exc: BaseException) -> TlsFailure:
    """One line for a failed handshake: the certificate's problem, the TLS alert, or the socket's error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailure(f"TLS certificate not accepted: {_reason(exc)}")
    if isinstance(exc, TimeoutError):
        return TlsFailure("TLS handshake timed out")
    if isinstance(exc, ssl.SSLError):
        return TlsFailure(f"TLS handshake failed: {_reason(exc)}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)):
        return TlsFailure("TLS handshake failed: the server closed the connection")
    return TlsFailure(f"TLS handshake failed: {_reason(exc)}")
