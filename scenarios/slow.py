"""Slow clients: each message goes a few bytes at a time, and they idle between messages.

The protocol has no framing (one recv is one message), so each piece is sent
and its "-" awaited before the next piece; every piece is a ``message``.
"""

from __future__ import annotations

import _swarmbench  # noqa: F401, I001  first: Swarmbench's harness and server, whatever the working directory holds

import gevent
from locust import task

from harness.user import TcpUser

PIECE_BYTES = 3
PIECE_PAUSE = 0.05
IDLE = 0.5


class SlowUser(TcpUser):
    @task
    def trickle(self) -> None:
        self.connect()
        payload = self.payload
        pieces = [payload[i : i + PIECE_BYTES] for i in range(0, len(payload), PIECE_BYTES)]
        for _ in range(self.options.messages_per_session):
            for piece in pieces:
                if not self.client.messages(1, piece):
                    return
                gevent.sleep(PIECE_PAUSE)
            gevent.sleep(max(IDLE, self.options.think_time))
        self.quit()
