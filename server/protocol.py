"""The tutorial's chat protocol, with no I/O (sans-IO, in the manner of h11).

Wire format, as the tutorial defines it:

* The client sends UTF-8 text with no framing. One ``recv(5120)`` is one
  message; the client waits for the reply before it sends the next one.
* The server computes ``"Hello " + text.rstrip().upper()`` and replies with the
  single byte ``-``.
* A message whose upper-cased text contains ``--QUIT--`` ends the session.

Servers feed whatever bytes they read to :meth:`ServerConnection.receive_data`
and act on the events it returns; clients use :func:`encode_message`,
:data:`REPLY` and :data:`QUIT`. Nothing else in the project parses protocol
bytes. Every ``Message`` and ``Undecodable`` event gets exactly one reply, so a
client that sends one chunk and waits for one ``-`` stays in step.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final, Union

#: The tutorial's ``recv(5120)``: the largest message, in bytes.
MAX_MESSAGE: Final = 5120
#: The server's reply to every message.
REPLY: Final = b"-"
#: What the tutorial's client sends to leave.
QUIT: Final = b"--quit--"
#: What the server looks for in the upper-cased text.
QUIT_TOKEN: Final = "--QUIT--"
#: Default address of every server and client (the tutorial's).
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
#: The tutorial's ``listen(6)``.
DEFAULT_BACKLOG: Final = 6


@dataclass(frozen=True, slots=True)
class Message:
    """A chunk of text to answer with :data:`REPLY`."""

    text: str
    result: str


@dataclass(frozen=True, slots=True)
class Quit:
    """The client asked to leave; the server closes the connection."""

    text: str


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer closed or half-closed its side (``recv`` returned ``b""``)."""


@dataclass(frozen=True, slots=True)
class Oversized:
    """A chunk filled the whole buffer: the client's message may have been cut.

    Informational; the chunk itself follows as a ``Message`` (or
    ``Undecodable``) event and is answered like any other.
    """

    size: int
    limit: int


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A chunk that is not UTF-8. It is answered, so the client stays in step."""

    size: int
    reason: str


Event = Union[Message, Quit, PeerClosed, Oversized, Undecodable]

_PEER_CLOSED: Final = PeerClosed()


def process(text: str) -> str:
    """The tutorial's ``process_input``: the work a message asks for."""
    return "Hello " + text.rstrip().upper()


def is_quit(result: str) -> bool:
    """True when a processed message asks to end the session (any case)."""
    return QUIT_TOKEN in result


def encode_message(text: str) -> bytes:
    """Encode one client message; refuse what the server would split in two."""
    data = text.encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise ValueError(
            f"a message is at most {MAX_MESSAGE} bytes (got {len(data)}): "
            "the protocol has no framing and the server reads recv(5120)"
        )
    return data


class ServerConnection:
    """One connection's protocol state, seen from the server.

    ``receive_data(b"")`` means end of stream. Data longer than
    ``max_message`` (a server that reads with a larger buffer) is cut into
    ``max_message`` pieces so that every server behaves as ``recv(5120)`` does.
    A UTF-8 character cut at the buffer's edge (a full ``max_message`` chunk) is
    carried over to the next chunk instead of failing, as the tutorial's
    ``decode()`` did; any other chunk is a whole message and decodes alone.
    """

    __slots__ = ("max_message", "closed", "_decoder")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        if max_message < 1:
            raise ValueError("max_message must be at least 1")
        self.max_message = max_message
        self.closed = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; return the events they make."""
        if self.closed:
            return []
        if not data:
            self.closed = True
            return [_PEER_CLOSED]
        size = len(data)
        if size < self.max_message:  # the common case: one small message
            return [self._piece(data)]
        events: list[Event] = []
        for start in range(0, size, self.max_message):
            piece = data[start : start + self.max_message]
            if len(piece) == self.max_message:
                events.append(Oversized(len(piece), self.max_message))
            event = self._piece(piece)
            events.append(event)
            if event.__class__ is Quit:
                break
        return events

    def _piece(self, piece: bytes) -> Event:
        # Only a chunk that filled the buffer can have been cut mid-character;
        # a shorter one is a whole message, so it must decode on its own.
        try:
            text = self._decoder.decode(piece, len(piece) < self.max_message)
        except UnicodeDecodeError as exc:
            self._decoder.reset()
            return Undecodable(len(piece), exc.reason)
        result = process(text)
        if is_quit(result):
            self.closed = True
            return Quit(text)
        return Message(text, result)


class ReplyCounter:
    """The client's side: counts ``-`` replies and spots anything else."""

    __slots__ = ("replies", "unexpected")

    def __init__(self) -> None:
        self.replies = 0
        self.unexpected = b""

    def receive_data(self, data: bytes) -> int:
        """Feed bytes read from the server; return how many replies they hold."""
        count = data.count(REPLY)
        if count != len(data):
            self.unexpected += data.replace(REPLY, b"")
        self.replies += count
        return count
