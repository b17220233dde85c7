"""``--check EXPR``: pass/fail conditions on a sweep's cells, for CI.

An expression is ``METRIC OP VALUE[UNIT]``: ``message.p99<5ms``,
``errors==0``, ``throughput>=10000``, ``server.threads_max<=50``. Latency
metrics are in microseconds; ``us``, ``ms`` and ``s`` units convert. Every
cell must satisfy every check; each broken one gives one line, and a figure
that was not measured (no server sample, an unreadable kernel counter) breaks
the check with a line saying so: missing data never passes.

``errors`` is every failure of every request name over the whole cell (ramp,
window and stop), as in the report's tables and findings; ``errors_in_window``
counts the measured window only.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from harness.results import PERCENTILES, CellResult

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
UNITS = {"us": 1.0, "µs": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "": 1.0}
EXPR_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(us|µs|ms|s|%)?\s*$")
LATENCY_STATS = {label: key for key, label, _ in PERCENTILES} | {
    "p999": "p999_us",
    "p9999": "p9999_us",
    "mean": "mean_us",
    "min": "min_us",
    "max": "max_us",
}


#: Beside a latency metric in a row: the figure is only a lower bound (harness.results.cells.Latency.bounds).
BOUND = ".lower_bound"


class CheckError(ValueError):
    """A check expression that cannot be read; the message is one line."""


@dataclass(frozen=True, slots=True)
class Check:
    text: str
    metric: str
    op: str
    value: float

    def holds(self, actual: float) -> bool:
        return OPS[self.op](actual, self.value)


def parse_check(text: str) -> Check:
    match = EXPR_RE.match(text)
    if not match:
        raise CheckError(f"cannot read check {text!r}: expected METRIC OP VALUE, e.g. 'message.p99<5ms'")
    metric, op, number, unit = match.groups()
    unit = unit or ""
    is_latency = is_latency_metric(metric)
    if unit in ("us", "µs", "ms", "s") and not is_latency:
        raise CheckError(f"check {text!r}: time units apply to latency metrics such as message.p99 only")
    if unit == "%":
        raise CheckError(f"check {text!r}: '%' is not a unit here; write ratios as numbers (0.9)")
    return Check(text.strip(), metric, op, float(number) * UNITS[unit])


def is_latency_metric(metric: str) -> bool:
    """``NAME.STAT`` where STAT is a percentile, mean, min or max (``message.p99.9``)."""
    if metric.startswith("ratio."):
        return False
    return any(metric.endswith("." + stat) and len(metric) > len(stat) + 1 for stat in LATENCY_STATS)


def cell_metrics(cell: CellResult) -> dict[str, float | None]:
    """Flatten a cell into the names checks use; a figure that was not measured is None."""
    metrics: dict[str, float | None] = {
        "throughput": cell.throughput,
        "messages": float(cell.messages),
        "errors": float(cell.errors),
        "errors_in_window": float(cell.errors_in_window),
        "users": float(cell.users),
        "window_s": cell.window_s,
        "users_not_established": None if cell.users_not_established is None else float(cell.users_not_established),
        "rate": cell.rate,
        "generator.cpu_percent_max": cell.generator.cpu_percent_max,
        "generator.saturated": float(cell.generator.saturated),
    }
    for name, lat in cell.latency.items():
        for short, key in LATENCY_STATS.items():
            value = getattr(lat, key)
            metrics[f"{name}.{short}"] = None if value is None else float(value)
            if lat.lower_bound(key):
                metrics[f"{name}.{short}{BOUND}"] = 1.0
        metrics[f"{name}.count"] = float(lat.count)
    for key in ("threads_mean", "threads_max", "cpu_percent_mean", "cpu_percent_max", "rss_bytes_max", "pss_bytes_max",
                "fds_max", "connections_max"):
        value = getattr(cell.server, key)
        metrics[f"server.{key}"] = None if value is None else float(value)
    for key, value in cell.kernel.items():
        metrics[f"kernel.{key}"] = None if value is None else float(value)
    return metrics


def evaluate(checks: Iterable[Check], rows: Iterable[tuple[str, Mapping[str, float | None]]]) -> list[str]:
    """Return one line per (check, row) that does not hold; a metric a row lacks, or did not measure, is broken too."""
    broken: list[str] = []
    rows = list(rows)
    for check in checks:
        for label, metrics in rows:
            actual = metrics.get(check.metric)
            if actual is None and check.metric in metrics:
                broken.append(f"check {check.text}: {label}: {check.metric} was not measured (no data)")
            elif actual is None:
                known = ", ".join(sorted(k for k in metrics if ("." not in k or k.startswith("message."))
                                         and not k.endswith(BOUND)))
                broken.append(f"check {check.text}: {label}: no metric {check.metric!r} (some known: {known})")
            elif metrics.get(check.metric + BOUND) and not (check.op in (">", ">=") and check.holds(actual)):
                # only "at least": a bound shows "above" checks, never "below" or "equal" ones
                broken.append(f"check {check.text}: {label}: {check.metric} ≥ {format_value(check.metric, actual)} "
                              "(a lower bound: messages had no reply)")
            elif not check.holds(actual):
                broken.append(f"check {check.text}: {label}: {check.metric} = {format_value(check.metric, actual)}")
    return broken


def format_value(metric: str, value: float) -> str:
    if is_latency_metric(metric):
        return f"{value / 1000:.3f} ms"
    return f"{value:g}"
