"""Reading a cell: the figures every reader of a cell asks for first, and the units they are told in.

Both the harness (a capacity trial's verdict, :mod:`harness.verdict`) and ``reports/`` (tables,
findings) read cells the same way: which latency is the headline, how many users were left
unanswered, whether the generator rather than the server set the figures. They live here, beside
the result model, because ``reports`` depends on ``harness.results`` and never the other way round.
Pure functions of a :class:`~harness.results.CellResult`; nothing here reads a file.
"""

from __future__ import annotations

from harness.results.cells import LAG_BOUND, CellResult, Latency

__all__ = [
    "ANSWERED", "CONNECT", "MESSAGE", "UNANSWERED", "fmt_duration_ms", "fmt_rate", "generator_limited", "generator_note",
    "lag_bound_only", "latency", "unanswered",
]  # fmt: skip

#: The request name whose latency is the headline (scenarios/chat.py).
MESSAGE = "message"  # every due message: the replies, and the waits of those that had none (lower bounds)
ANSWERED = "message_answered"  # the replies alone
CONNECT = "connect"
#: Users still waiting for a reply when the run stopped (a whole-cell name, harness.assemble.WHOLE_CELL).
UNANSWERED = "unanswered"


def latency(cell: CellResult, name: str = MESSAGE) -> Latency | None:
    """The cell's latency summary for ``name``, or None when nothing was measured."""
    lat = cell.latency.get(name)
    return lat if lat is not None and lat.count > 0 else None


def unanswered(cell: CellResult) -> int:
    """Users still waiting for a reply when the run stopped: messages no latency figure holds."""
    lat = cell.latency.get(UNANSWERED)
    return lat.count if lat is not None else 0


def generator_limited(cell: CellResult) -> bool:
    """The cell's figures describe the generator (a saturated Locust process, or the cell's generator-bound mark)."""
    return cell.generator.saturated or cell.generator_bound is not None


def lag_bound_only(cell: CellResult) -> bool:
    """Marked only because the generator's own loop lag is a large share of message p99: the load was
    delivered, so its latencies are upper bounds for the server (a held SLO still holds)."""
    return not cell.generator.saturated and (cell.generator_bound or "").startswith(LAG_BOUND)


def generator_note(cell: CellResult) -> str:
    """Why the cell describes the generator, with the figure that decided it ("" when it does not)."""
    if cell.generator_bound:
        return f"generator-bound: {cell.generator_bound}"
    if cell.generator.saturated:
        return f"generator-saturated (CPU {cell.generator.cpu_percent_max:.0f}%)"
    return ""


def fmt_rate(value: float | None) -> str:
    """A rate for tables and prose: whole numbers from 100 up, one decimal below, "-" when unknown."""
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def fmt_duration_ms(value: float) -> str:
    """A latency for prose: µs, ms or s, whichever reads best."""
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 1:
        return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"
    return f"{value * 1000:.0f} µs"
