"""Clients that leave part-way through a session without --quit--: half close (FIN), half reset (RST)."""

from __future__ import annotations

import _swarmbench  # noqa: F401, I001  first: Swarmbench's harness and server, whatever the working directory holds

import random

from locust import task

from harness.user import TcpUser


class AbruptUser(TcpUser):
    @task
    def leave(self) -> None:
        self.connect()
        if self.send_messages(random.randint(1, self.options.messages_per_session)):
            self.leave_abruptly()
