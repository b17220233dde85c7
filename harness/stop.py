"""Stopping a run on Ctrl-C, SIGTERM or SIGHUP while keeping everything it finished.

Shared by ``swarmbench sweep`` and ``swarmbench capacity``: a signal only records itself, and
:class:`StopOnSignal` turns it into a KeyboardInterrupt at the next progress tick, where the run
stops its Locust process and writes what it knows. Exit code: 128 + the signal's number.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from harness.results import CellResult
from harness.sweep import SweepProgress

#: Signals that stop a sweep, keeping its finished cells (exit 128 + the signal's number).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_as_ctrl_c(received: list[int]) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP only record themselves; :class:`StopOnSignal` stops the sweep.

    A KeyboardInterrupt raised from a signal handler can land anywhere, even where Python
    ignores exceptions (logging's lock, a finalizer: "Exception ignored in ..."), and be lost.
    Recorded, the signal is acted on at the next progress tick (twice a second in a cell),
    where the sweep stops its Locust run and keeps every finished cell.
    """

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopOnSignal(SweepProgress):
    """Turns a recorded stop signal into a KeyboardInterrupt at a safe point: the next progress tick."""

    def __init__(self, inner: SweepProgress, received: list[int]) -> None:
        self.inner, self.received = inner, received

    def cell_started(self, variant: str, users: int, index: int, total: int, seconds: float) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.inner.cell_started(variant, users, index, total, seconds)

    def tick(self, messages_per_s: float | None) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.inner.tick(messages_per_s)

    def cell_done(self, cell: CellResult) -> None:
        self.inner.cell_done(cell)

    def note(self, text: str) -> None:
        self.inner.note(text)


def exit_code(received: list[int]) -> int:
    """128 + the first stop signal's number (Ctrl-C's when none was recorded: a KeyboardInterrupt)."""
    return 128 + (received[0] if received else signal.SIGINT)
