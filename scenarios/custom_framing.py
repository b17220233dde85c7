"""Your own framing in a locustfile: a server whose messages and replies carry a 4-byte length prefix.

    locust -f scenarios/custom_framing.py --host tcp://127.0.0.1:9000 [--message "hello"]

A :class:`~harness.profiles.Profile` subclass says how a message is
encoded and where a reply ends (and, optionally, whether it is a success); the
user class names it in ``profile``. Everything else (timing, histograms, open
loop, TLS, Locust's stats) is the TcpUser's. tests/test_profiles.py runs it
against a small length-prefixed echo server.

Its first import makes ``harness`` Swarmbench's in any working directory
(scenarios/_swarmbench.py); a copy kept elsewhere drops it, and ``swarmbench sweep --scenario FILE``
binds the packages itself.
"""

from __future__ import annotations

import _swarmbench  # noqa: F401, I001  first: Swarmbench's harness and server, whatever the working directory holds

from locust import task

from harness.user import TcpFailure, TcpUser, UnexpectedReply
from harness.profiles import Profile


class LengthPrefixed(Profile):
    """Big-endian u32 length, then that many bytes; the server echoes each message in the same framing."""

    name = "length-prefixed"

    def encode(self, message: str) -> bytes:
        data = message.encode()
        if not data:
            raise ValueError("--message: an empty message")
        return len(data).to_bytes(4, "big") + data

    def reply_end(self, buffer: bytes) -> int:
        if len(buffer) < 4:
            return 0
        end = 4 + int.from_bytes(buffer[:4], "big")
        if end > 1 << 20:
            raise ValueError(f"a {end}-byte frame")
        return end if len(buffer) >= end else 0

    def check(self, reply: bytes) -> TcpFailure | None:
        return None if len(reply) > 4 else UnexpectedReply("an empty frame")


class FramedUser(TcpUser):
    profile = LengthPrefixed

    @task
    def session(self) -> None:
        self.connect()
        if self.send_messages():
            self.quit()  # this profile has no quit message: the client just closes
