"""The tutorial's client at scale: connect, K messages each waiting for "-", --quit--, again.

    locust -f scenarios/chat.py --host tcp://127.0.0.1:8000 [--messages-per-session 10]
           [--message-size 12] [--think-time 0] [--rate 0] [--hdr-file results/chat.json]
"""

from __future__ import annotations

import _swarmbench  # noqa: F401, I001  first: Swarmbench's harness and server, whatever the working directory holds

from locust import task

from harness.user import TcpUser


class ChatUser(TcpUser):
    @task
    def chat(self) -> None:
        self.connect()
        if self.send_messages():
            self.quit()
