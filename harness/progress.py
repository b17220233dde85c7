"""The sweep's progress on a terminal: a rich bar with the cell, time left and live messages/s.

``--quiet`` (or no terminal) prints one plain line per cell instead, for CI logs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from harness.results import CellResult
from harness.sweep import SweepConfig, SweepProgress


def cell_line(cell: CellResult) -> str:
    msg = cell.latency.get("message")
    p99 = (f"p99 {'≥ ' if msg.lower_bound('p99_us') else ''}{msg.p99_us / 1000:.3f} ms" if msg and msg.count
           and msg.p99_us is not None else "p99 -")
    bound = cell.generator_bound or ("a Locust process saturated" if cell.generator.saturated else None)
    mark = f" [generator-bound: {bound}]" if bound else ""
    error = f" ({cell.error})" if cell.error else ""
    threads = "-" if cell.server.threads_max is None else cell.server.threads_max
    window = "" if cell.window_s is None else f"  window {cell.window_s:g} s"
    asked = f" of {cell.rate:,.0f} asked" if cell.rate else ""
    return (
        f"{cell.variant:>10} u={cell.users:<6} {cell.status:<12} {cell.throughput:>10.0f} msg/s{asked}  {p99}  "
        f"errors {cell.errors}  threads max {threads}{window}{mark}{error}"
    )


class PlainProgress(SweepProgress):
    def __init__(self, total_cells: int) -> None:
        self.total = total_cells

    def cell_started(self, variant: str, users: int, index: int, total: int, seconds: float) -> None:
        print(f"[{index}/{total}] {variant} at {users} users ({seconds:.0f} s)", flush=True)

    def cell_done(self, cell: CellResult) -> None:
        print(cell_line(cell), flush=True)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class RichProgress(SweepProgress):
    def __init__(self, progress: Progress, task: TaskID, cell_seconds: float) -> None:
        self.progress = progress
        self.task = task
        self.cell_seconds = cell_seconds
        self.done_seconds = 0.0
        self.cell_start = time.monotonic()

    def cell_started(self, variant: str, users: int, index: int, total: int, seconds: float) -> None:
        self.cell_start = time.monotonic()
        self.progress.update(self.task, description=f"[{index}/{total}] {variant} u={users}", rate="")

    def tick(self, messages_per_s: float | None) -> None:
        elapsed = min(time.monotonic() - self.cell_start, self.cell_seconds)
        rate = f"{messages_per_s:,.0f} msg/s" if messages_per_s is not None else "starting"
        self.progress.update(self.task, completed=self.done_seconds + elapsed, rate=rate)

    def cell_done(self, cell: CellResult) -> None:
        self.done_seconds += self.cell_seconds
        self.progress.update(self.task, completed=self.done_seconds)
        self.progress.console.print(cell_line(cell), highlight=False)

    def note(self, text: str) -> None:
        self.progress.console.print(text, style="yellow", highlight=False)


@contextmanager
def make_progress(cfg: SweepConfig, quiet: bool = False) -> Iterator[SweepProgress]:
    total = len(cfg.planned())
    console = Console(stderr=False)
    if quiet or not console.is_terminal:
        yield PlainProgress(total)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=total * cfg.cell_seconds(), rate="")
        yield RichProgress(progress, task, cfg.cell_seconds())
