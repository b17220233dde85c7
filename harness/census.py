"""Every due message counts: those with no reply by the window's end enter the figures as a lower bound.

Why: percentiles over the replies alone let a server look fast by not answering. A
pool whose threads are all taken leaves most users waiting; their messages never
get a reply, so they are in no histogram, and the few users it serves set a p99 of
a millisecond. Here each such message counts as at least the time it has waited
(a censored value, as in survival statistics): the percentile that rests on one is
then known only as a bound ("at least 7.5 s").

Which messages, at the end of the window (``now``), from each connected user whose
message has waited longer than ``stuck`` (the run's ``STALLED_S``, 1 s):

- the message it waits for, from when it was due (the open loop's slot, the closed
  loop's send);
- in the open loop, behind it, every slot of its schedule that fell due in the
  window and could not be sent because the user was still waiting.

A message in flight for less than ``stuck`` is the window's edge, not a stuck
user: it is answered just after the end, as the ones in flight at the start were
answered inside the window and counted there. A user that is connecting or
quitting is not charged: the schedule skips the slots missed then
(``Pacer.resume``), and they show in the achieved rate instead. Messages that
failed with no reply (reset, closed, timed out) count the same way, each as its
wait until it failed (``message_failed``, recorded as it fails).

Taken in the same turn of the loop as the recorder's cut of the window's last
second (``Run``), so a message is either in that second (answered) or here,
never both and never neither. A long backlog is recorded in at most
:data:`GROUPS` steps, each at its smallest wait: still a lower bound, and bounded
work per user. Imports neither Locust nor gevent (a plain function over what clients hold).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from harness.results.histogram_file import CENSORED

__all__ = ["CENSORED", "GROUPS", "censored_waits"]

#: A user's backlog of unsent slots is recorded in at most this many (wait, count) steps.
GROUPS = 32


class Schedule(Protocol):
    """An open-loop user's schedule (``harness.user.pacing.Pacer``)."""

    next_ns: int  # the slot of the next message (perf_counter_ns)
    interval_ns: int


class Waiting(Protocol):
    """What the census reads of a client (``TcpClient``'s fields)."""

    busy: int  # perf_counter_ns the message in flight was sent; 0: none
    pending: int  # the send timer's ticket of a message not sent yet; 0: none

    @property
    def connected(self) -> bool: ...

    @property
    def pacer(self) -> Schedule | None: ...


def censored_waits(clients: Iterable[Waiting], now_ns: int, start_ns: int, end_ns: int, stuck_ns: int,
                   groups: int = GROUPS) -> list[tuple[int, int]]:
    """(wait µs, count) of every message of a stuck user due before ``end_ns``, with no reply at ``now_ns``.

    ``start_ns``/``end_ns``: the window (``perf_counter_ns``); an open loop's unsent slots count
    when due in it; the message a user waits for counts whenever it was due. A user is stuck when
    that message has waited more than ``stuck_ns``.
    """
    out: list[tuple[int, int]] = []
    for client in clients:
        if not client.connected or not (client.busy or client.pending):
            continue
        pacer = client.pacer
        if pacer is None:  # closed loop: the one message, due when it was sent
            if 0 < client.busy < end_ns and now_ns - client.busy > stuck_ns:
                out.append(((now_ns - client.busy) // 1000, 1))
            continue
        interval, following = pacer.interval_ns, pacer.next_ns
        due = following - interval  # the message it waits for took the slot before the next
        if due >= end_ns or now_ns - due <= stuck_ns:
            continue
        out.append(((now_ns - due) // 1000, 1))
        first = following
        if first < start_ns:  # the first slot of the grid inside the window
            first += -(-(start_ns - first) // interval) * interval
        if first < end_ns:
            out.extend(_slots(now_ns, first, interval, (end_ns - 1 - first) // interval + 1, groups))
    return out


def _slots(now_ns: int, first: int, interval: int, count: int, groups: int) -> list[tuple[int, int]]:
    """``count`` slots from ``first``: their waits, grouped into at most ``groups`` (smallest wait each)."""
    size = -(-count // max(1, groups))  # ceil
    steps = []
    for begin in range(0, count, size):
        taken = min(size, count - begin)
        latest = first + (begin + taken - 1) * interval  # the group's last slot waited the least
        steps.append((max(0, now_ns - latest) // 1000, taken))
    return steps
