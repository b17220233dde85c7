"""The open loop's schedule, apart from Locust and gevent so that it can be tested alone."""

from __future__ import annotations

import random
from time import perf_counter_ns


class Pacer:
    """One user's open-loop schedule: its share of ``--rate``, from a random phase.

    Within a session every message is due on the schedule, and its latency counts
    from when it was due (coordinated omission corrected). Time spent connecting
    is ``connect``'s: after a connect the schedule resumes at the next slot of its
    own grid (the user keeps its random phase, so users that reconnected together
    do not send in lockstep), and the slots missed meanwhile are not sent, so they
    show in the achieved rate instead of being charged to the session's first messages.
    """

    def __init__(self, per_user_rate: float) -> None:
        self.interval_ns = max(1, int(1e9 / per_user_rate))
        self.next_ns = perf_counter_ns() + int(random.random() * self.interval_ns)

    def resume(self, now: int | None = None) -> None:
        """Skip the slots that passed: the next one due is the first of the grid at or after ``now``."""
        now = perf_counter_ns() if now is None else now
        if self.next_ns < now:
            missed = -(-(now - self.next_ns) // self.interval_ns)  # ceil
            self.next_ns += missed * self.interval_ns
