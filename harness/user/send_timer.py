"""The open loop's sends, made from one hub callback: a user waits for its reply, not for its turn.

An open-loop user that sleeps until its message is due, sends it and then waits
for the reply waits twice per message: two trips through the hub (a timer, a
Waiter, two greenlet switches each), so an open-loop message cost about twice a
closed-loop one. Here the user
hands the message to the run's :class:`SendTimer` and goes straight to waiting
for the reply. The timer keeps every pending send in one heap and one libev
timer for the earliest (its idle wait bounded by the run's
:class:`~harness.user.alarm.Alarm`, so it fires to within tens of µs); when it
fires it sends everything due, from the hub, on each socket's non-blocking OS
socket, and stamps the send time on the client (``sent_at``, ``busy``: the
fields of its :class:`Queued` protocol, which TcpClient meets).

Only for plain TCP sockets: TLS writes may need reads (the user's greenlet does
those), so a TLS user sleeps until due as before. Never early: an entry is sent
once its instant has passed, at most the hub's delay later.
"""

from __future__ import annotations

from heapq import heappop, heappush
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Protocol

import gevent

if TYPE_CHECKING:
    from harness.user.alarm import Alarm


class Queued(Protocol):
    """What the send timer touches of a client whose message it holds (as ``Watched`` is the watchdog's)."""

    pending: int  # the ticket of its message waiting to be sent, 0: none (the timer sets 0 as it sends)
    sent_at: int  # the timer stamps when it sent (perf_counter_ns) here...
    busy: int  # ... and here: the reply's wait starts (the watchdog reads it)

    def send_failed(self, exc: OSError) -> None: ...

    def send_rest(self, rest: bytes) -> None: ...


class SendTimer:
    """One process's pending open-loop sends: a heap of (due, ticket, client, send, data), one timer."""

    def __init__(self, alarm: Alarm | None) -> None:
        self.heap: list[tuple[int, int, Queued, Any, bytes]] = []
        self.tickets = 0
        self.at = 0  # the instant the timer is set for; 0: no timer
        self.timer: Any = None
        self.alarm = alarm
        self.loop = gevent.get_hub().loop

    def send_at(self, due_ns: int, client: Queued, send: Any, data: bytes) -> int:
        """Send ``data`` with ``send`` (a non-blocking OS socket's) at ``due_ns``; returns the ticket.

        The send happens only while ``client.pending`` is the ticket: a client that
        left (its greenlet killed, its socket closed) sets it to 0 and nothing is sent.
        """
        self.tickets = ticket = self.tickets + 1
        heap = self.heap
        heappush(heap, (due_ns, ticket, client, send, data))
        if not self.at or due_ns < self.at:
            self._schedule(heap[0][0])
        return ticket

    def _schedule(self, due_ns: int) -> None:
        """One timer for the earliest entry; libev's clock is read first (see Alarm.sleep_until)."""
        if self.timer is not None:
            self.timer.close()
        loop = self.loop
        loop.update_now()
        left = due_ns - perf_counter_ns()
        self.timer = timer = loop.timer(left / 1e9 if left > 0 else 0.0)
        self.at = due_ns
        timer.start(self._fire)
        if left > 0 and self.alarm is not None:  # a timer already due runs at the loop's next turn
            self.alarm.bound(due_ns)

    def _fire(self) -> None:
        """In the hub: send every entry that is due, then set the timer for the next one."""
        self.at = 0
        heap = self.heap
        now = perf_counter_ns()
        try:
            while heap and heap[0][0] <= now:
                _, ticket, client, send, data = heappop(heap)
                if client.pending != ticket:
                    continue
                client.pending = 0
                client.sent_at = client.busy = now = perf_counter_ns()
                try:
                    sent = send(data)
                except BlockingIOError:  # the socket's buffer is full: the client's sender waits to send it
                    sent = 0
                except OSError as exc:
                    client.send_failed(exc)
                    continue
                if sent != len(data):
                    client.send_rest(data[sent:])
        finally:  # whatever happened, what is left keeps its timer (users wait on it, unwatched)
            if heap:
                self._schedule(heap[0][0])

    def close(self) -> None:
        """Stop the timer and drop what is pending (the run is over; its users are gone)."""
        if self.timer is not None:
            self.timer.close()
            self.timer = None
        self.at = 0
        self.heap.clear()
