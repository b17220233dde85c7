"""A reply as it arrives in pieces: the readers that find where it ends, and the one limit on its size.

Apart from :mod:`harness.profiles` because a profile says what a reply is and
these say how to find its end without reading any byte twice: the RESP2 reader
keeps its place between reads, so that a long reply costs its length once
(:class:`RespReader`), and every reader enforces ``--max-reply-bytes`` as the same
:class:`TooLarge`. Bytes in, an end out: no socket, no Locust, no gevent.
:mod:`harness.profiles` re-exports every public name here.
"""

from __future__ import annotations

import re
from typing import Protocol

#: The default of ``--max-reply-bytes``: the one limit on a reply, in every profile. A reply
#: longer than this fails as a ReplyTooLarge; a user holds at most this much of a reply in memory.
MAX_REPLY = 8 << 20
#: The largest ``--max-reply-bytes``: 1 GiB a user.
MAX_REPLY_LIMIT = 1 << 30


def max_reply_bytes(value: object) -> int:
    """``--max-reply-bytes``, checked: a whole number of bytes, 1..1 GiB; a one-line ``ValueError`` if not."""
    try:
        limit = int(str(value).strip())
    except ValueError:
        raise ValueError(f"--max-reply-bytes must be a whole number of bytes (got {str(value)[:40]!r})") from None
    if not 1 <= limit <= MAX_REPLY_LIMIT:
        raise ValueError(f"--max-reply-bytes must be 1..{MAX_REPLY_LIMIT} bytes (got {limit})")
    return limit


class TooLarge(ValueError):
    """The reply is longer than the profile's ``max_reply`` (``--max-reply-bytes``): one message, whatever its size."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"reply larger than --max-reply-bytes {limit}")
        self.limit = limit


class Reader(Protocol):
    """What :meth:`harness.profiles.Profile.reader` returns: the bytes so far, and ``feed`` for each read."""

    buffer: bytes | bytearray

    def feed(self, data: bytes) -> int: ...


class Framing(Protocol):
    """What :class:`ReplyReader` asks of its profile (a :class:`harness.profiles.Profile`): the end, the limit."""

    max_reply: int

    def reply_end(self, buffer: bytes) -> int: ...


class ReplyReader:
    """One reply as it arrives in pieces: :meth:`feed` each read, until it returns where the reply ends.

    This default asks the profile's ``reply_end`` of every byte so far at each read (fine for
    short replies; ``n`` bytes in ``k`` reads cost ``n * k``). The line and Redis profiles have
    readers that resume where the last read left off, so that a long reply costs its length once.
    """

    def __init__(self, profile: Framing) -> None:
        self.profile = profile
        self.buffer = bytearray()

    def feed(self, data: bytes) -> int:
        """Add ``data``; the end of the first whole reply, 0 while incomplete; ``ValueError`` (``TooLarge``) if not one."""
        buffer = self.buffer
        buffer += data
        end = self.profile.reply_end(bytes(buffer))
        limit = self.profile.max_reply
        if end > limit or (not end and len(buffer) >= limit):
            raise TooLarge(limit)
        return end


class LineReader(ReplyReader):
    """A line's end, looked for in each read's new bytes only."""

    def feed(self, data: bytes) -> int:
        buffer = self.buffer
        start = len(buffer)
        buffer += data
        end = buffer.find(b"\n", start)
        limit = self.profile.max_reply
        if end >= limit or (end < 0 and len(buffer) >= limit):
            raise TooLarge(limit)
        return end + 1


_INTEGER = re.compile(rb"-?[0-9]+")
#: A RESP line in one C call: a short simple string or error (group 1 None), or a type and its number.
#: Longer lines, and whatever it does not match, take the general path (a search for the line's end).
RESP_HEAD = re.compile(rb"(?:[+\-][^\r\n]{0,64}|([:$*])(-?[0-9]{1,18}))\r\n")
_MAX_DEPTH = 64


def _resp_int(buffer: bytes | bytearray, start: int, end: int) -> int:
    text = buffer[start:end]
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"not an integer: {bytes(text[:20])!r}")
    return int(text)


class RespReader:
    """RESP2 replies in pieces: each read resumes where the last one stopped, so a reply costs its length once.

    State between reads: where the next value starts (``pos``), the elements
    still due in each open array (``stack``), where to look on for a line end
    (``hint``) and how many bytes must be in before anything can change
    (``need``: a bulk string's end, or one more byte).

    Not hiredis's ``Reader`` (C, about 60 times faster on a long array: bench/bench_resp.py):
    it makes an object per element and allocates a list of the length a header declares
    (``*1000000000``, 13 bytes, asks for 8 GB), and it takes RESP3 and bulk strings without
    their ``\\r\\n``. This reader holds the reply's bytes and nothing else.
    """

    __slots__ = ("buffer", "hint", "limit", "need", "pos", "stack")

    def __init__(self, limit: int = MAX_REPLY) -> None:
        self.buffer: bytes | bytearray = b""
        self.limit = limit
        self.pos = self.hint = 0
        self.need = 1
        self.stack: list[int] = []

    def feed(self, data: bytes) -> int:
        """Add ``data``; the end of the reply (>0), 0 while incomplete; ``ValueError`` (``TooLarge``) if not one.

        The first piece is kept as it is (no copy for a reply in one read); a bytearray given first is grown in place.
        """
        buffer = self.buffer
        if not buffer:
            buffer = self.buffer = data
        else:
            if type(buffer) is bytes:
                buffer = self.buffer = bytearray(buffer)
            buffer += data  # type: ignore[operator]
        size = len(buffer)
        if size < self.need:
            if size >= self.limit:
                raise TooLarge(self.limit)
            return 0
        return self._scan(buffer, size)

    def _scan(self, buffer: bytes | bytearray, size: int) -> int:
        pos, stack, limit, head = self.pos, self.stack, self.limit, RESP_HEAD.match
        while True:
            match = head(buffer, pos)
            if match is not None:
                mark, digits = match.groups()
                after = match.end()
                count = int(digits) if digits is not None else 0
            else:  # a long or unusual line, an incomplete one, or no RESP at all
                line = buffer.find(b"\r\n", pos if pos > self.hint else self.hint)
                if line < 0:
                    if size >= limit:
                        raise TooLarge(limit)
                    self.pos, self.hint, self.need = pos, max(pos, size - 1), size + 1
                    return 0
                mark, after = bytes(buffer[pos : pos + 1]), line + 2
                if mark in (b"+", b"-"):
                    mark, count = None, 0
                elif mark in (b":", b"$", b"*"):
                    count = _resp_int(buffer, pos + 1, line)
                else:
                    raise ValueError(f"unknown RESP type {mark!r}")
            if mark == b"$":  # bulk string
                if count >= 0:
                    end = after + count + 2
                    if end > limit:
                        raise TooLarge(limit)
                    if size < end:  # nothing to do before the whole string is in
                        self.pos, self.need = pos, end
                        return 0
                    if not buffer.startswith(b"\r\n", end - 2):
                        raise ValueError("bulk string without its \\r\\n")
                elif count == -1:  # the null bulk string
                    end = after
                else:
                    raise ValueError(f"bulk string of {count} bytes")
            elif mark == b"*":  # array
                if count > 0:
                    if len(stack) >= _MAX_DEPTH:
                        raise ValueError("arrays nested too deep")
                    stack.append(count)
                    pos = after
                    continue
                if count < -1:  # -1: the null array
                    raise ValueError(f"array of {count} elements")
                end = after
            else:  # simple string, error, integer
                end = after
            if end > limit:
                raise TooLarge(limit)
            pos = end
            while stack:  # the value ends an element of each array it closes
                left = stack[-1] - 1
                if left:
                    stack[-1] = left
                    break
                stack.pop()
            else:
                self.pos = end
                return end


def resp_end(buffer: bytes, limit: int = MAX_REPLY) -> int:
    """End (exclusive) of the RESP2 value at the start of ``buffer``, -1 while incomplete; ``ValueError`` when malformed."""
    return RespReader(limit).feed(buffer) or -1
