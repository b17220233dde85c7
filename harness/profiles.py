"""Protocol profiles: how a message is framed and where its reply ends, sans-IO (bytes in, verdicts out).

Like ``server/protocol.py``, a profile never touches a socket, so it is tested
with bytes alone. The client's one message loop
(:meth:`harness.user.client.TcpClient.messages`) sends ``encode(message)`` and
reads until :meth:`Profile.reply_end` finds a whole reply (one longer than a read
goes to :meth:`Profile.reader`, which resumes where the last read stopped; every
reply is limited to ``--max-reply-bytes``: both in :mod:`harness.readers`), then asks :meth:`Profile.check`
whether it is a success. When a profile knows the one
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

import shlex
from typing import ClassVar

from harness.failures import SAMPLE_CHARS, ServerError, TcpFailure
from harness.readers import (MAX_REPLY, MAX_REPLY_LIMIT, RESP_HEAD, LineReader, Reader, ReplyReader, RespReader, TooLarge,
                             max_reply_bytes, resp_end)
from server.protocol import MAX_MESSAGE, QUIT, REPLY

#: Where scenarios and tests import them from: the readers and the reply's limit live in :mod:`harness.readers`.
__all__ = [
    "MAX_MESSAGE_BYTES", "MAX_REPLY", "MAX_REPLY_LIMIT", "PROFILES", "ChatProfile", "LineProfile", "LineReader", "Profile",
    "Reader", "RedisProfile", "ReplyReader", "RespReader", "TooLarge", "max_reply_bytes", "resp_end",
]  # fmt: skip

#: The most a message may be (line, redis): what the command line can carry, far below any reply limit.
MAX_MESSAGE_BYTES = 1 << 20


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
    #: the longest reply accepted (``--max-reply-bytes``), for ``reply_end`` and the readers to enforce
    max_reply: int = MAX_REPLY

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

    def reader(self) -> Reader:
        """A reader for one reply that did not come whole in one read (see :class:`ReplyReader`)."""
        return ReplyReader(self)

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
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError(f"--message: at most {MAX_MESSAGE_BYTES} bytes")
        return data

    def reply_end(self, buffer: bytes) -> int:
        end = buffer.find(b"\n")
        if end >= 0 and end < self.max_reply:
            return end + 1
        if end >= 0 or len(buffer) >= self.max_reply:
            raise TooLarge(self.max_reply)
        return 0

    def reader(self) -> Reader:
        return LineReader(self)


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
        # a whole simple reply (+OK, -ERR ..., :1, $5 hello) without a reader: what most messages get
        kind = buffer[:1]
        if kind == b"+" or kind == b"-":
            end = buffer.find(b"\r\n") + 2
            if 1 < end <= self.max_reply:
                return end
        elif kind == b"$" or kind == b":":
            match = RESP_HEAD.match(buffer)
            if match is not None:
                digits, end = match.group(2), match.end()
                if kind == b":":
                    if end <= self.max_reply:
                        return end
                elif digits[0] != 0x2D:  # a null or negative size: the reader's
                    end += int(digits) + 2
                    if end <= len(buffer) and end <= self.max_reply and buffer.startswith(b"\r\n", end - 2):
                        return end
        return RespReader(self.max_reply).feed(buffer) if buffer else 0

    def reader(self) -> Reader:
        return RespReader(self.max_reply)

    def check(self, reply: bytes) -> TcpFailure | None:
        if reply[:1] == b"-":  # the failure's text is the error's start (and a bounded sample of them: harness.failures)
            return ServerError(reply[1 : min(len(reply) - 2, 1 + 4 * SAMPLE_CHARS)].decode(errors="replace"))
        return None

    def known_reply(self, data: bytes) -> bytes | None:
        return b"+PONG\r\n" if data == b"*1\r\n$4\r\nPING\r\n" else None


#: The profiles ``--protocol`` offers, by name.
PROFILES: dict[str, type[Profile]] = {p.name: p for p in (ChatProfile, LineProfile, RedisProfile)}
