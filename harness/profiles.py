"""Protocol profiles: how a message is framed and where its reply ends, sans-IO (bytes in, verdicts out).

Like ``server/protocol.py``, a profile never touches a socket, so it is tested
with bytes alone. The client's one message loop
(:meth:`harness.user.client.TcpClient.messages`) sends ``encode(message)`` and
reads until :meth:`Profile.reply_end` finds a whole reply, then asks
:meth:`Profile.check` whether it is a success. When a profile knows the one
reply a correct server always sends (:meth:`Profile.known_reply`: chat's ``-``,
Redis's ``+PONG`` to ``PING``), the loop only compares one ``recv`` with it and
parses nothing unless they differ.

Your own framing, in a locustfile (see scenarios/custom_framing.py)::

    class LengthPrefixed(Profile):
        name = "length-prefixed"

        def encode(self, message: str) -> bytes:
            data = message.encode()
            return len(data).to_bytes(4, "big") + data

        def reply_end(self, buffer: bytes) -> int:
            if len(buffer) < 4:
                return 0
            end = 4 + int.from_bytes(buffer[:4], "big")
            return end if len(buffer) >= end else 0

    class MyUser(ChatUser):
        profile = LengthPrefixed

This module imports neither Locust nor gevent: the command line offers ``sorted(PROFILES)``.
"""

from __future__ import annotations

import re
import shlex
from typing import ClassVar

from harness.failures import ServerError, TcpFailure
from server.protocol import MAX_MESSAGE, QUIT, REPLY

#: A reply (or a RESP line) longer than this without its end is not a reply of this profile.
MAX_REPLY = 1 << 20


class Profile:
    """One protocol's framing. Subclass it and override ``encode`` and ``reply_end`` (``check`` if replies can fail).

    ``quit_bytes`` is sent to end a session (empty: just close); with
    ``closes_after_quit`` the client then waits until the server closes.
    """

    name: ClassVar[str] = "custom"
    #: bytes asked of one ``recv``
    recv_size: ClassVar[int] = 65536
    quit_bytes: bytes = b""
    closes_after_quit: bool = False

    def __init__(self, quit_message: str = "") -> None:
        self.quit_message = quit_message

    def default_message(self, payload: str) -> str:
        """The message sent without ``--message``: ``payload`` is ``--message-size`` bytes of text."""
        return payload

    def encode(self, message: str) -> bytes:
        """The bytes of one message; ``ValueError`` (one line) when this profile cannot carry it."""
        raise NotImplementedError

    def reply_end(self, buffer: bytes) -> int:
        """Length of the first complete reply in ``buffer``; 0 while incomplete; ``ValueError`` if it cannot be one."""
        raise NotImplementedError

    def check(self, reply: bytes) -> TcpFailure | None:
        """A failure for a whole reply that is not a success (a server's error reply), else None."""
        return None

    def known_reply(self, data: bytes) -> bytes | None:
        """The one reply a correct server always sends to ``data`` (lets the loop skip parsing), or None."""
        return None


class ChatProfile(Profile):
    """The tutorial's protocol: any text up to 5120 bytes, the reply is one ``-``; ``--quit--`` ends a session."""

    name = "chat"
    recv_size = MAX_MESSAGE
    quit_bytes = QUIT
    closes_after_quit = True

    def encode(self, message: str) -> bytes:
        data = message.encode()
        if not 1 <= len(data) <= MAX_MESSAGE:
            raise ValueError(f"--message: chat carries 1..{MAX_MESSAGE} bytes (got {len(data)})")
        if data == QUIT:
            raise ValueError("--message: --quit-- would end the session")
        return data

    def reply_end(self, buffer: bytes) -> int:
        if not buffer:
            return 0
        if buffer[:1] != REPLY:
            raise ValueError("not '-'")
        return 1

    def known_reply(self, data: bytes) -> bytes | None:
        return REPLY


class LineProfile(Profile):
    """A message is one line ending in ``\\n``; so is its reply. ``--quit-message`` is the session's last line."""

    name = "line"

    def __init__(self, quit_message: str = "") -> None:
        super().__init__(quit_message)
        if quit_message:
            self.quit_bytes = self.encode(quit_message)
            self.closes_after_quit = True

    def encode(self, message: str) -> bytes:
        if "\n" in message or "\r" in message:
            raise ValueError("--message: a line profile message is one line (no \\n or \\r in it)")
        data = message.encode() + b"\n"
        if len(data) > MAX_REPLY:
            raise ValueError(f"--message: at most {MAX_REPLY} bytes")
        return data

    def reply_end(self, buffer: bytes) -> int:
        end = buffer.find(b"\n")
        if end >= 0:
            return end + 1
        if len(buffer) > MAX_REPLY:
            raise ValueError(f"no line end in {MAX_REPLY} bytes")
        return 0


_INTEGER = re.compile(rb"-?[0-9]+")
_MAX_DEPTH = 64


def _resp_int(buffer: bytes, start: int, end: int) -> int:
    text = buffer[start:end]
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"not an integer: {text[:20]!r}")
    return int(text)


def resp_end(buffer: bytes, pos: int = 0, depth: int = 0) -> int:
    """End (exclusive) of the RESP2 value at ``pos``, -1 while incomplete; ``ValueError`` when malformed."""
    if pos >= len(buffer):
        return -1
    if depth > _MAX_DEPTH:
        raise ValueError("arrays nested too deep")
    kind = buffer[pos]
    line = buffer.find(b"\r\n", pos)
    if line < 0:
        if len(buffer) - pos > MAX_REPLY:
            raise ValueError(f"no line end in {MAX_REPLY} bytes")
        return -1
    if kind in b"+-":  # simple string, error
        return line + 2
    if kind == 0x3A:  # ':' integer
        _resp_int(buffer, pos + 1, line)
        return line + 2
    if kind == 0x24:  # '$' bulk string
        size = _resp_int(buffer, pos + 1, line)
        if size == -1:  # null bulk string
            return line + 2
        if not 0 <= size <= 512 * 1024 * 1024:
            raise ValueError(f"bulk string of {size} bytes")
        end = line + 2 + size
        if len(buffer) < end + 2:
            return -1
        if buffer[end : end + 2] != b"\r\n":
            raise ValueError("bulk string without its \\r\\n")
        return end + 2
    if kind == 0x2A:  # '*' array
        count = _resp_int(buffer, pos + 1, line)
        if count < -1:
            raise ValueError(f"array of {count} elements")
        at = line + 2
        for _ in range(max(count, 0)):
            at = resp_end(buffer, at, depth + 1)
            if at < 0:
                return -1
        return at
    raise ValueError(f"unknown RESP type {bytes([kind])!r}")


class RedisProfile(Profile):
    """RESP2: a message is a command (``SET k v``) sent as an array of bulk strings; replies parsed whole.

    An error reply (``-ERR ...``) is a :class:`~harness.failures.ServerError`;
    ``QUIT`` ends a session (the server replies ``+OK`` and closes).
    """

    name = "redis"
    quit_bytes = b"*1\r\n$4\r\nQUIT\r\n"
    closes_after_quit = True

    def default_message(self, payload: str) -> str:
        return "PING"

    def encode(self, message: str) -> bytes:
        try:
            words = shlex.split(message)
        except ValueError as exc:
            raise ValueError(f"--message {message!r}: {exc}") from None
        if not words:
            raise ValueError("--message: a Redis command, e.g. 'PING' or 'SET k v'")
        if words[0].upper() == "QUIT":
            raise ValueError("--message: QUIT would end the session")
        parts = [b"*%d\r\n" % len(words)]
        for word in words:
            data = word.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def reply_end(self, buffer: bytes) -> int:
        end = resp_end(buffer)
        return end if end > 0 else 0

    def check(self, reply: bytes) -> TcpFailure | None:
        if reply[:1] == b"-":
            return ServerError(reply[1:-2].decode(errors="replace")[:80])
        return None

    def known_reply(self, data: bytes) -> bytes | None:
        return b"+PONG\r\n" if data == b"*1\r\n$4\r\nPING\r\n" else None


#: The profiles ``--protocol`` offers, by name.
PROFILES: dict[str, type[Profile]] = {p.name: p for p in (ChatProfile, LineProfile, RedisProfile)}
