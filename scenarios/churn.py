"""A connection storm: connect, one message, --quit--, repeat (shows what the listen backlog does)."""

from __future__ import annotations

import _swarmbench  # noqa: F401, I001  first: Swarmbench's harness and server, whatever the working directory holds

from locust import task

from harness.user import TcpUser


class ChurnUser(TcpUser):
    @task
    def churn(self) -> None:
        self.connect()
        if self.send_messages(1):
            self.quit()
