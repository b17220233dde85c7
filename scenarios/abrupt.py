"""Clients that leave part-way through a session without --quit--: half close (FIN), half reset (RST)."""

from __future__ import annotations

import random

from locust import task

from harness.user import TcpUser


class AbruptUser(TcpUser):
    @task
    def leave(self) -> None:
        self.connect()
        if self.send_messages(random.randint(1, self.options.messages_per_session)):
            self.leave_abruptly()
