"""The TCP user's failure classes: small, so Locust's failure table groups them by kind.

Each message names an errno, never an address. A server chooses some texts (its
error replies, bytes that do not parse): :func:`bounded` keeps the first
``SAMPLES_PER_CLASS`` distinct ones of each class, cut to ``SAMPLE_CHARS``, and
reports the rest under the class's own text, so a server answering ``-ERR
<random>`` makes a few rows in Locust's table, not one per reply.
"""

from __future__ import annotations

import errno


class TcpFailure(Exception):
    """A failed call; ``text`` is its default message (no address: Locust groups failures by message).

    ``fatal``: the connection cannot go on (it is closed and the session fails);
    a server's error reply is not fatal, the next message goes on the same connection.
    """

    text = "tcp failure"
    fatal = True

    def __init__(self, text: str | None = None) -> None:
        super().__init__(text or self.text)


# One line each: the class names are what Locust's failure table and the result files count.
class ConnectRefused(TcpFailure): text = "connection refused"  # noqa: E701
class ConnectTimeout(TcpFailure): text = "connect timed out"  # noqa: E701
class ConnectFailed(TcpFailure): text = "connect failed"  # noqa: E701
class ResetByServer(TcpFailure): text = "connection reset by the server"  # noqa: E701
class ReplyTimeout(TcpFailure): text = "no reply in time"  # noqa: E701
class ClosedByServer(TcpFailure): text = "the server closed the connection"  # noqa: E701
class UnexpectedReply(TcpFailure): text = "a reply other than expected"  # noqa: E701
class SocketFailure(TcpFailure): text = "socket error"  # noqa: E701
class TlsFailure(TcpFailure): text = "TLS handshake failed"  # noqa: E701


class ReplyTooLarge(UnexpectedReply): text = "reply larger than --max-reply-bytes"  # noqa: E701


class ServerError(TcpFailure):
    """The server answered with its protocol's error reply (RESP ``-ERR ...``): counted, the session goes on."""

    text = "the server replied with an error"
    fatal = False


#: Distinct texts reported per failure class in one process; later texts are reported as the class's own.
SAMPLES_PER_CLASS = 10
#: Characters of a text kept (the rest is cut, marked "...").
SAMPLE_CHARS = 120
_samples: dict[type[TcpFailure], set[str]] = {}


def bounded(exc: TcpFailure) -> TcpFailure:
    """``exc`` with a text from a bounded set: its own (cut) while among the class's first distinct texts.

    Locust's failure table has a row per distinct text, and its memory and log grow with them.
    """
    text = str(exc)
    if len(text) > SAMPLE_CHARS:
        text = text[:SAMPLE_CHARS] + "..."
    cls = type(exc)
    seen = _samples.get(cls)
    if seen is None:
        seen = _samples[cls] = set()
    if text not in seen:
        if len(seen) < SAMPLES_PER_CLASS:
            seen.add(text)
        else:
            text = f"{cls.text} (other texts: only the first {SAMPLES_PER_CLASS} distinct are kept)"
    if exc.args != (text,):
        exc.args = (text,)
    return exc


def escaped(data: bytes | bytearray, limit: int = 40) -> str:
    """The first ``limit`` bytes of ``data``, escaped (``repr``), for a one-line failure message."""
    head = repr(bytes(data[:limit]))
    return head + ("..." if len(data) > limit else "") + f" ({len(data)} bytes)"


def classify(exc: OSError, connecting: bool = False) -> TcpFailure:
    """Map an OSError to a failure class (the message names the errno, never an address)."""
    if isinstance(exc, ConnectionRefusedError):
        return ConnectRefused()
    if isinstance(exc, TimeoutError):
        return ConnectTimeout() if connecting else ReplyTimeout()
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return ResetByServer()
    name = exc.__class__.__name__ if exc.errno is None else errno.errorcode.get(exc.errno, str(exc.errno))
    return ConnectFailed(f"connect failed: {name}") if connecting else SocketFailure(f"socket error: {name}")
