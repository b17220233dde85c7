"""TLS for every variant: the server's context from ``--tls-cert``/``--tls-key`` (stdlib ``ssl``)."""

from __future__ import annotations

import os
import ssl
import stat


def make_tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server's SSLContext from ``--tls-cert``/``--tls-key``; ValueError is the one-line error."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together: give both or neither")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        _regular_file(option, path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # password: an encrypted key fails here instead of prompting on a terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except OSError as exc:  # ssl.SSLError is an OSError too
        if isinstance(exc, ssl.SSLError):
            reason = f"not a PEM certificate and its matching key ({exc.reason or exc})"
        else:
            reason = exc.strerror or str(exc)
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: cannot load: {reason}") from None
    return context


def _regular_file(option: str, path: str) -> None:
    """A FIFO would block the server's start for good, a folder or a device reads as nothing: say which."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"{option} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ValueError(f"{option} {path}: {kind}, not a PEM file")
